#!/bin/busybox sh
# /init of the harness's dom0. Brings up the Xen services, runs `xl -N
# create` (the real parser, which only works in a dom0) on /plan/parse/*.cfg,
# then boots each /plan/domu/*/cfg in turn with `xl create -c`: its console
# goes to the virtio-serial port named after the directory (a file on the
# host) and to /run/<name>.log, where this script waits for the string in
# wait_for, then `linger` seconds more, before asking the domU to shut down
# with `xl shutdown`. A domU with an `absent` file boots from its own disk:
# before creating it, the dom0 deletes what it holds of the files listed
# there and empties /boot, then checks it holds no copy of them. Every result
# is a "harness: " line on the dom0 console (QEMU's serial).

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
say() { echo "harness: $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# The waits below fork as little as they can: under TCG a fork of this PV
# dom0 costs ~0.1 s of host CPU, and a wait polling with grep, wc and sleep
# each second took ~0.18 host CPUs from the guest it waited for (measured:
# 10.8 s of QEMU's CPU a minute over an idle dom0's; the loop below, 2.6 s).
now_s() { read -r up _ </proc/uptime; now=${up%.*}; }  # $now: whole seconds of uptime
tick() { read -t 1 _ <>/run/tick || :; }  # one second, on a FIFO that never has data

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run/xen
mount -t devpts devpts /dev/pts
# What udev would add to devtmpfs: the hotplug scripts' locking stats /dev/stdin.
ln -s /proc/self/fd /dev/fd
ln -s fd/0 /dev/stdin
ln -s fd/1 /dev/stdout
ln -s fd/2 /dev/stderr
for m in $(cat /etc/dom0-modules); do
    insmod "$m" || say "FAILED: insmod $m"
done
mount -t xenfs xenfs /proc/xen
/usr/lib/xen-4.17/bin/xenstored --pid-file /var/run/xenstored.pid
/usr/lib/xen-4.17/bin/xen-init-dom0 >/dev/null || say "FAILED: xen-init-dom0"
/usr/lib/xen-4.17/bin/xenconsoled --pid-file /var/run/xenconsoled.pid
brctl addbr xenbr0 && ip link set xenbr0 up || say "FAILED: bridge xenbr0"
say "dom0 ready at $(uptime_s) s"

for cfg in /plan/parse/*.cfg; do
    [ -e "$cfg" ] || continue
    if xl -N create "$cfg" >/run/parse.out 2>&1; then
        say "parse ok ${cfg##*/}"
    else
        say "parse FAILED ${cfg##*/}"
        sed 's/^/harness: | /' /run/parse.out
    fi
done

port_of() {
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && { echo "/dev/${p##*/}"; return; }
    done
    echo /dev/null
}

# xenconsole ends on EOF from its stdin: give it a FIFO that never has data.
mkfifo /run/hold /run/tick
mark=/run/heard  # touched when the console is seen to have grown
# Boots $dir's domU; its console goes to its port and is added to $log,
# whose size before this attempt is $from (what this attempt printed is
# judged alone, not with an earlier attempt's lines).
create() {
    from=0
    [ -e "$log" ] && from=$(wc -c <"$log")
    xl dmesg -c >/dev/null  # from here on, Xen's ring holds only what this attempt met
    xl create -c "$dir/cfg" 0<>/run/hold 2>&1 | tee -a "$log" >"$(port_of "$name")" &
    console=$!
}
# Ends the attempt that failed, and creates the domU again: the host cuts
# its console at the marker (run.py, RETRY_MARK).
again() {
    attempts=$((attempts + 1))
    say "domU $name: $1, xl create again at $(uptime_s) s"
    for id in $(domus); do xl destroy "$id"; done
    echo "harness: xl create again" >"$(port_of "$name")"
    sleep "$pause"
    create
}
# The domUs still known to Xen (a failed creation can leave one behind,
# holding the name the next attempt needs).
domus() {
    xl list | awk 'NR > 2 { print $2 }'
}
# The regular files of the dom0's root holding the bytes of a file of
# $dir/absent ("SIZE SHA256" lines): those of the same size, hashed.
copies() {
    while read -r size sum; do
        for f in $(find / -xdev -type f -size "${size}c"); do
            [ "$(sha256sum <"$f" | cut -d' ' -f1)" = "$sum" ] && echo "$f"
        done
    done <"$dir/absent"
}
# A domU that boots from its own disk must find its kernel there: the dom0
# gives up its own copies (the plan's files an earlier domU booted from).
remove_guest_kernel() {
    mkdir -p /boot
    rm -rf /boot/*
    for f in $(copies); do
        case $f in /plan/files/*) rm -f "$f" ;; esac
    done
    left=$(copies)
    if [ -z "$left" ]; then
        say "domU $name: dom0 holds no guest kernel ($(find / -xdev -type f | wc -l) files checked)"
    else
        say "domU $name: FAILED: dom0 holds the guest's" $left
    fi
}
# A guest is given up on when its console has been silent for `silence`
# seconds (a wrong root= leaves the initramfs waiting, then at a shell), or
# after `cap` seconds in all: a guest still printing is still booting, and on
# a busy machine that can take several minutes. A creation that loses a
# hotplug script to libxl's timeout, or whose guest triple-faults where the
# domU has a `crash_retry` file, is tried `tries` times in all, `pause`
# seconds apart (run.py stretches all four on a busy machine).
read -r silence cap tries pause </plan/timeout
for dir in /plan/domu/*/; do
    dir=${dir%/}
    name=${dir##*/}
    wait_for=$(cat "$dir/wait_for")
    log=/run/$name.log
    [ -e "$dir/absent" ] && remove_guest_kernel
    now_s
    started=$now
    say "domU $name: xl create at $(uptime_s) s"
    create
    attempts=1
    waited=0
    heard=$started
    : >"$mark"
    looks=0
    until [ $((looks % 2)) = 0 ] && grep -qF -- "$wait_for" "$log"; do  # grep forks: every 2nd look
        now_s
        # the console grew since the last look ($log newer than $mark)
        if [ "$log" -nt "$mark" ]; then
            : >"$mark"
            heard=$now
        fi
        if [ $((now - heard)) -ge "$silence" ] || [ $waited -ge "$cap" ]; then
            say "domU $name: nothing to wait for after $waited s ($((now - heard)) s silent)"
            break
        fi
        if ! kill -0 $console 2>/dev/null; then
            # libxl gives a hotplug script 40 s; on a machine busy with other
            # work the emulated dom0 can be slower than that, and the domain
            # is destroyed before it starts. That says nothing of the guest:
            # create it again.
            if [ $attempts -lt "$tries" ] &&
                tail -c +$((from + 1)) "$log" | grep -qF "because of timeout"; then
                again "a hotplug script timed out"
                continue
            fi
            # QEMU's emulated SVM now and then makes a PVH guest's vCPU
            # triple-fault (tests/test_xen_pvh.py): a fault of the emulation,
            # which the next attempt does not meet. Only for a domU that
            # asks for it: the next attempt boots from what this one wrote.
            if [ $attempts -lt "$tries" ] && [ -e "$dir/crash_retry" ] &&
                xl dmesg | grep -qF "Triple fault"; then
                again "its guest triple-faulted (xl dmesg)"
                continue
            fi
            say "domU $name: console ended after $waited s"
            break
        fi
        tick
        now_s
        waited=$((now - started))
        looks=$((looks + 1))
    done
    if grep -qF -- "$wait_for" "$log"; then
        say "domU $name: waited $waited s"
        sleep "$(cat "$dir/linger")"
        say "domU $name: lingered until $(uptime_s) s"
    fi
    domid=$(domus | head -n 1)
    say "domU $name: xl shutdown at $(uptime_s) s"
    if [ -z "$domid" ]; then
        say "domU $name: not running"
    elif timeout 120 xl shutdown -w "$domid" >/run/shutdown.out 2>&1; then
        say "domU $name: shut down at $(uptime_s) s"
    else
        say "domU $name: FAILED to shut down"
        sed 's/^/harness: | /' /run/shutdown.out
        xl destroy "$domid"
    fi
    wait
    # xl's monitor, a daemon of its own, destroys the domain a moment after
    # the console ends: the next domU may reuse the name only then.
    for _ in $(seq 60); do
        xl list "$domid" >/dev/null 2>&1 || break
        sleep 1
    done
    say "domU $name: gone at $(uptime_s) s"
done
say "done at $(uptime_s) s"
sync
poweroff -f
