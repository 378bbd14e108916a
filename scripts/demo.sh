#!/bin/sh
# make demo: build the example VSA disk from fixtures/, convert it with this
# machine's own kernel and initrd, and show what changed.
set -eu
export LIBGUESTFS_BACKEND_SETTINGS="${LIBGUESTFS_BACKEND_SETTINGS-force_tcg}"
VSAIMAGE=.venv/bin/vsaimage
mkdir -p demo

kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n 1)
version=${kernel#/boot/vmlinuz-}
initrd=/boot/initrd.img-$version

echo "== building the example VSA image (demo/vsa.img)"
.venv/bin/python -m fixtures.build_image demo/vsa.img

echo "== vsaimage inspect demo/vsa.img"
$VSAIMAGE inspect demo/vsa.img

echo "== vsaimage convert demo/vsa.img --kernel $kernel --initrd $initrd -o demo/vsa-xen.img --force"
$VSAIMAGE convert demo/vsa.img --kernel "$kernel" --initrd "$initrd" -o demo/vsa-xen.img --force

echo "== the xl config (demo/vsa-xen.cfg)"
cat demo/vsa-xen.cfg
