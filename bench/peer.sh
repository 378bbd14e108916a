#!/bin/sh
# The conversion as a user would hand-write it with guestfish: the baseline
# `bench.run` compares `vsaimage convert` with.
#
#     bench/peer.sh IN.img OUT PREP INITRD
#
# Writes OUT.img, OUT.initrd and OUT.cfg. PREP is a directory made beforehand
# (not timed) by bench/prep.py: the edited versions of the files the edits
# touch (produced with vsaimage's own pure edit functions, as a user would
# produce them with an editor or sed), `version` (the kernel version),
# `modules.tar` (the modules payload, same bytes vsaimage sends), `pcihack`
# (the init-bottom script) and `vsa.cfg`.
#
# What it does, in order, one thing at a time as such scripts do:
#   1. cp --sparse=always of the input;
#   2. one guestfish session: mount the root (/dev/sda5 on the stock layout),
#      upload the edited files (an upload over an existing file keeps its
#      owner and mode), chmod the new ones, tar-in the modules tarball;
#   3. the initrd: unmkinitramfs, add scripts/init-bottom/pcihack, register it
#      in ORDER before the param.conf line, repack with cpio | zstd -9;
#   4. copy the xl config.
# It checks nothing: no role detection, no postconditions, no staging name.
set -eu

in=$1 out=$2 prep=$3 initrd=$4
version=$(cat "$prep/version")

cp --sparse=always "$in" "$out.img"

guestfish --rw -a "$out.img" <<EOF
run
mount /dev/sda5 /
upload $prep/lhn_functions /etc/init.d/lhn_functions
mkdir-p /hack/bus/pci
upload $prep/devices /hack/bus/pci/devices
chmod 0644 /hack/bus/pci/devices
upload $prep/fst /etc/lefthand/brand/common/fst
upload $prep/libhal.so /etc/lefthand/system/lib/hal/libhal.so
upload $prep/liblhnsys.so /etc/lefthand/system/liblhnsys.so
upload $prep/hwid /sbin/hwid
mkdir-p /etc/udev/rules.d
upload $prep/53-devfs-hack.rules /etc/udev/rules.d/53-devfs-hack.rules
chmod 0644 /etc/udev/rules.d/53-devfs-hack.rules
mkdir-p /etc/udev/scripts
upload $prep/xvd-hack.sh /etc/udev/scripts/xvd-hack.sh
chmod 0755 /etc/udev/scripts/xvd-hack.sh
upload $prep/brand.init /etc/lefthand/brand/brand.init
upload $prep/rc.drivers /etc/lefthand/brand/rc.drivers
upload $prep/inittab /etc/inittab
upload $prep/securetty /etc/securetty
upload $prep/fstab /etc/fstab
mkdir-p /lib/modules/$version
tar-in $prep/modules.tar /lib/modules/$version
EOF

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
unmkinitramfs "$initrd" "$tree"
install -m 0755 "$prep/pcihack" "$tree/scripts/init-bottom/pcihack"
sed -i '/param\.conf/i /scripts/init-bottom/pcihack "$@"' "$tree/scripts/init-bottom/ORDER"
(cd "$tree" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | zstd -q -9 -T0) > "$out.initrd"

cp "$prep/vsa.cfg" "$out.cfg"
