#!/bin/sh
# Installs the Debian packages vsaimage, its tests and its demo need.
# Idempotent and quick when everything is already there: apt is only called
# for packages that are missing.
set -eu

PACKAGES="
libguestfs-tools python3-guestfs linux-image-amd64 supermin
qemu-system-x86 qemu-utils qemu-block-extra
python3-venv
e2fsprogs fdisk util-linux
cpio libarchive13 libarchive-tools initramfs-tools kmod
gzip bzip2 xz-utils lz4 zstd
tgt mdadm
"

missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *" installed") ;;
        *) missing="$missing $p" ;;
    esac
done

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends $missing
fi

# supermin builds the appliance from the host kernel; Debian installs it 0600,
# which stops libguestfs for every user but root.
for k in /boot/vmlinuz-*; do
    [ -e "$k" ] || continue
    if [ ! -r "$k" ] || [ "$(stat -c %a "$k")" = 600 ]; then
        as_root chmod 0644 "$k"
    fi
done

# A static busybox for the example image, without installing busybox-static
# (that would replace Debian's busybox and regenerate /boot/initrd.img-*).
cache=${VSAIMAGE_CACHE:-.cache}
if [ ! -x "$cache/busybox-static/bin/busybox" ]; then
    mkdir -p "$cache/deb"
    (cd "$cache/deb" && apt-get download busybox-static >/dev/null 2>&1) || {
        as_root apt-get update -q && (cd "$cache/deb" && apt-get download busybox-static)
    }
    rm -rf "$cache/busybox-static"
    dpkg -x "$cache"/deb/busybox-static_*.deb "$cache/busybox-static"
fi

# Debian packages taken apart, never installed: the Xen harness of the boot
# test (hypervisor, xl and its libraries, the hotplug scripts and the bash
# they run in; pvgrub2's images; pygrub with the python, curses, ctypes and
# ext2 reader it runs on, and the vt100 terminfo libxl gives its menu) and
# the example image's init chain (sysvinit, agetty, mingetty, udev).
# Extracted into one tree, $cache/debian-root, from which the builders copy
# the programs they need and the libraries those load.
DEBS="
xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common xenstore-utils
libxenmisc4.17 libxenstore4 libxencall1 libxenevtchn1 libxenforeignmemory1
libxengnttab1 libxentoollog1 libxendevicemodel1 libxentoolcore1 libxenhypfs1
libyajl2 libuuid1 zlib1g liblzma5 libzstd1 libgcc-s1 bash libtinfo6
sysvinit-core util-linux mingetty udev libselinux1 libpcre2-8-0 libkmod2 libacl1
libblkid1 libcap2 libssl3 libc6
grub-xen-host python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
libexpat1 libncursesw6 ncurses-base libffi8 libext2fs2 libcom-err2
"
stamp="$cache/debian-root/.packages"
if [ "$(cat "$stamp" 2>/dev/null)" != "$(echo $DEBS)" ]; then
    echo "setup: downloading and extracting Debian packages into $cache/debian-root"
    rm -rf "$cache/debian-root" "$cache/deb/debian-root"
    mkdir -p "$cache/deb/debian-root"
    (cd "$cache/deb/debian-root" && apt-get download -q $DEBS >/dev/null 2>&1) || {
        as_root apt-get update -q && (cd "$cache/deb/debian-root" && apt-get download -q $DEBS)
    }
    for deb in "$cache"/deb/debian-root/*.deb; do
        dpkg -x "$deb" "$cache/debian-root"
    done
    echo $DEBS > "$stamp"
fi

# The SAN/iQ 8 fixture's i386 userland (fixtures/saniq8.py): the static
# busybox and sysvinit's init chain for i386, with the libraries they load,
# extracted into $cache/debian-root-i386. apt downloads i386 packages only
# once the architecture is added.
DEBS_I386="busybox-static sysvinit-core mingetty libc6 libselinux1 libpcre2-8-0"
stamp="$cache/debian-root-i386/.packages"
if [ "$(cat "$stamp" 2>/dev/null)" != "$DEBS_I386" ]; then
    echo "setup: downloading and extracting i386 Debian packages into $cache/debian-root-i386"
    if ! dpkg --print-foreign-architectures | grep -qx i386; then
        as_root dpkg --add-architecture i386
        as_root apt-get update -q
    fi
    rm -rf "$cache/debian-root-i386" "$cache/deb/i386"
    mkdir -p "$cache/deb/i386"
    # shellcheck disable=SC2086
    (cd "$cache/deb/i386" && apt-get download -q $(printf '%s:i386 ' $DEBS_I386) >/dev/null 2>&1) || {
        as_root apt-get update -q &&
            (cd "$cache/deb/i386" && apt-get download -q $(printf '%s:i386 ' $DEBS_I386))
    }
    for deb in "$cache"/deb/i386/*.deb; do
        dpkg -x "$deb" "$cache/debian-root-i386"
    done
    echo "$DEBS_I386" > "$stamp"
fi

# The boot test's Xen harness (tests/xenharness/dom0.py): the hypervisor and
# the dom0's initramfs, from the tree above and the host's Debian kernel.
/usr/bin/python3 -m tests.xenharness.dom0
