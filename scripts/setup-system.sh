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
