"""The example VSA disk built by fixtures/build_image.py, read back by other
means than the ones that wrote it: `sfdisk --json` for the partition table,
superblocks parsed here, `debugfs` on `IMAGE?offset=N` for files. No
libguestfs, no root."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import os
import re
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from fixtures import build_image as bi
from fixtures import make_binaries
from support import data_extents

LAYOUT_NAMES = sorted(bi.LAYOUTS)
# debugfs reads a path without following symlinks: content checks run on
# the layouts whose seed files are plain files.
PLAIN_LAYOUTS = [name for name in LAYOUT_NAMES if not bi.LAYOUTS[name].links]
# The SAN/iQ 9.5 layouts, whose root is the example tree as it is (lhos12
# lays LeftHand OS 12's files over it and has no boot partition).
SANIQ_PLAIN = [name for name in PLAIN_LAYOUTS if not bi.LAYOUTS[name].overlay]
EXT3_INCOMPAT_FORBIDDEN = 0x40 | 0x80 | 0x200  # extents, 64bit, flex_bg


@pytest.fixture(scope="module")
def images() -> dict[str, Path]:
    out = {}
    for name in LAYOUT_NAMES:
        started = time.monotonic()
        out[name] = bi.cached_image(name)
        print(f"cached_image({name!r}): {time.monotonic() - started:.2f} s -> {out[name]}")
    return out


def debugfs(image: Path, part: bi.Partition, request: str) -> bytes:
    proc = subprocess.run(
        ["debugfs", "-R", request, f"{image}?offset={part.start}"],
        capture_output=True,
        check=True,
    )
    return proc.stdout


def cat(image: Path, part: bi.Partition, path: str) -> bytes:
    return debugfs(image, part, f'cat "{path}"')


def stat(image: Path, part: bi.Partition, path: str) -> dict[str, str] | None:
    """Type, mode (octal text), uid, gid and link target of `path`, None if
    it does not exist."""
    text = debugfs(image, part, f'stat "{path}"').decode("latin-1")
    if "Inode:" not in text:
        return None
    kind = re.search(r"Type: (\w+)\s+Mode:\s+(\d+)", text)
    owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", text)
    assert kind and owner, text
    link = re.search(r'Fast link dest: "(.*)"', text)
    return {
        "type": kind[1],
        "mode": f"{int(kind[2], 8):04o}",
        "uid": owner[1],
        "gid": owner[2],
        "link": link[1] if link else "",
    }


def kind_and_mode(image: Path, part: bi.Partition, path: str) -> tuple[str, str]:
    info = stat(image, part, path)
    assert info is not None, path
    return info["type"], info["mode"]


def superblock(image: Path, part: bi.Partition) -> dict[str, object]:
    with image.open("rb") as f:
        f.seek(part.start + 1024)
        sb = f.read(1024)
    return {
        "magic": struct.unpack_from("<H", sb, 56)[0],
        "compat": struct.unpack_from("<I", sb, 92)[0],
        "incompat": struct.unpack_from("<I", sb, 96)[0],
        "uuid": str(uuid.UUID(bytes=sb[104:120])),
        "label": sb[120:136].rstrip(b"\0").decode(),
    }


def data_digest(path: Path) -> str:
    """Hash of the non-zero 4 KiB blocks and their offsets: equal for equal
    contents, however the zeros are stored."""
    h = hashlib.sha256()
    h.update(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        for start, end in data_extents(path):
            pos = start - start % 4096
            while pos < end:
                chunk = os.pread(f.fileno(), min(1 << 20, end - pos), pos)
                for i in range(0, len(chunk), 4096):
                    block = chunk[i : i + 4096]
                    if block.count(0) != len(block):
                        h.update(str(pos + i).encode() + block)
                pos += len(chunk)
    return h.hexdigest()


# --- the layout facts themselves (no image needed) -------------------------


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_layout_facts_are_consistent(name: str) -> None:
    lay = bi.LAYOUTS[name]
    parts = sorted(lay.partitions, key=lambda p: p.start)
    extended = [p for p in parts if p.type == "5"]
    assert len(extended) == 1
    primaries = [p for p in parts if not p.logical]
    logicals = [p for p in parts if p.logical]
    for a, b in itertools.pairwise(primaries):
        assert a.end <= b.start
    for a, b in itertools.pairwise(logicals):
        assert a.end < b.start  # room for the next EBR
    for p in logicals:
        assert extended[0].start < p.start and p.end <= extended[0].end
    assert [p.number for p in logicals] == list(range(5, 5 + len(logicals)))
    if lay.boot_part is None:  # LeftHand OS 12: the root is the first, bootable partition
        assert lay.root.role == "root" and lay.root.bootable and not lay.root.logical
    else:
        assert lay.root.role == "root" and lay.root.logical
        assert lay.boot.role == "boot" and lay.boot.bootable
    assert lay.root.size >= 2 * bi.GiB  # room for a ~450 MB modules tree
    assert max(p.end for p in parts) <= lay.size
    assert [p.role for p in parts].count("root") == 1


def test_layouts_differ_where_inspect_must_not_assume() -> None:
    stock, alt = bi.LAYOUTS["stock"], bi.LAYOUTS["alt"]
    assert (stock.root_part, stock.boot_part) == (5, 1)
    assert alt.root_part == 6
    assert alt.boot.start != stock.boot.start and alt.boot.size != stock.boot.size
    assert stock.fstab["/boot"] == "/dev/sda1"
    assert alt.fstab["/boot"] == f"UUID={alt.boot.uuid}"
    assert stock.size == 6 * bi.GiB and alt.size == 4 * bi.GiB


# --- the images, read back --------------------------------------------------


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_image_is_sparse(images: dict[str, Path], name: str) -> None:
    st = images[name].stat()
    allocated = st.st_blocks * 512
    print(f"{name}: {st.st_size / bi.GiB:g} GiB virtual, {allocated / bi.MiB:.1f} MiB allocated")
    assert st.st_size == bi.LAYOUTS[name].size
    assert allocated < 64 * bi.MiB


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_partition_table(images: dict[str, Path], name: str) -> None:
    lay, image = bi.LAYOUTS[name], images[name]
    out = subprocess.run(
        ["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True
    ).stdout
    table = json.loads(out)["partitiontable"]
    assert table["label"] == "dos"
    assert table["id"] == lay.disk_id
    assert table["sectorsize"] == 512
    found = {int(p["node"][len(str(image)) :]): p for p in table["partitions"]}
    assert sorted(found) == sorted(p.number for p in lay.partitions)
    for part in lay.partitions:
        entry = found[part.number]
        assert entry["start"] * 512 == part.start, part
        if part.type != "5":
            assert entry["size"] * 512 == part.size, part
        assert entry["type"] == part.type
        assert entry.get("bootable", False) == part.bootable


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_filesystems(images: dict[str, Path], name: str) -> None:
    lay, image = bi.LAYOUTS[name], images[name]
    for part in lay.partitions:
        if part.fs == "ext3":
            sb = superblock(image, part)
            assert sb["magic"] == 0xEF53, part
            assert sb["label"] == part.label and sb["uuid"] == part.uuid
            assert isinstance(sb["compat"], int) and sb["compat"] & 0x4  # has_journal
            assert isinstance(sb["incompat"], int)
            assert not sb["incompat"] & EXT3_INCOMPAT_FORBIDDEN
        elif part.fs == "swap":
            with image.open("rb") as f:
                f.seek(part.start + 4096 - 10)
                assert f.read(10) == b"SWAPSPACE2"


@pytest.mark.parametrize("name", SANIQ_PLAIN)
def test_root_holds_the_seed_files(images: dict[str, Path], name: str) -> None:
    lay, image = bi.LAYOUTS[name], images[name]
    root = lay.root
    assert cat(image, root, "/etc/lefthand/.version").decode().strip() == bi.VSA_VERSION
    for path in bi.SEED_FILES:
        info = stat(image, root, path)
        assert info is not None and info["type"] == "regular", path
        assert (info["uid"], info["gid"]) == ("0", "0"), path
    assert stat(image, root, "/hack") is None
    assert stat(image, root, f"{bi.PLATFORM_DIR}/platform.xml") is None
    for path in ("/sbin/hwid", bi.BRAND_INIT, bi.RC_DRIVERS, "/etc/udev/scripts/scsi-devfs.sh"):
        assert stat(image, root, path) == {
            "type": "regular", "mode": "0755", "uid": "0", "gid": "0", "link": ""
        }, path  # fmt: skip
    assert kind_and_mode(image, root, bi.LHN_FUNCTIONS) == ("regular", "0644")
    assert kind_and_mode(image, root, "/etc/shadow") == ("regular", "0400")
    assert kind_and_mode(image, root, "/tmp") == ("directory", "1777")
    assert kind_and_mode(image, root, "/root") == ("directory", "0700")
    for path in ("/proc", "/sys", "/dev", "/run", "/var/log", "/boot", "/etc/udev/scripts"):
        assert kind_and_mode(image, root, path) == ("directory", "0755"), path
    assert debugfs(image, root, f"ls /lib/modules/{bi.KERNEL_VERSION}").count(b"modules.dep")


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_root_can_run_busybox(images: dict[str, Path], name: str) -> None:
    lay, image = bi.LAYOUTS[name], images[name]
    busybox = stat(image, lay.root, "/bin/busybox")
    assert busybox is not None and busybox["type"] == "regular" and busybox["mode"] == "0755"
    assert cat(image, lay.root, "/bin/busybox") == bi.default_busybox().read_bytes()
    for applet in bi.APPLETS:
        info = stat(image, lay.root, f"/bin/{applet}")
        assert info is not None and info["type"] == "symlink", applet
        assert info["link"] == "busybox"
    assert "sh" in bi.APPLETS and "poweroff" in bi.APPLETS and "mount" in bi.APPLETS


@pytest.mark.parametrize("name", [n for n in LAYOUT_NAMES if n not in PLAIN_LAYOUTS])
def test_links_are_symlinks(images: dict[str, Path], name: str) -> None:
    lay, image = bi.LAYOUTS[name], images[name]
    for path, target, moved in lay.links:
        info = stat(image, lay.root, path)
        assert info is not None and (info["type"], info["link"]) == ("symlink", target), path
        if moved is not None:
            assert stat(image, lay.root, moved) is not None, moved


@pytest.mark.parametrize("name", SANIQ_PLAIN)
def test_seed_targets_look_as_the_edits_expect(images: dict[str, Path], name: str) -> None:
    lay, image = bi.LAYOUTS[name], images[name]
    root = lay.root
    functions = cat(image, root, bi.LHN_FUNCTIONS).decode()
    assert "didMotherboardChange() {\n" in functions
    body = functions.split("didMotherboardChange() {\n", 1)[1].split("\n}\n", 1)[0]
    assert bi.DMIDECODE_LINE + "\n" in body
    assigned = [ln for ln in functions.splitlines() if "moboUUID=" in ln and "dmidecode" in ln]
    assert assigned == [bi.DMIDECODE_LINE]
    assert functions.count("moboUUID") > body.count("moboUUID")  # another function uses it
    assert any(ln.lstrip().startswith("#") and "dmidecode" in ln for ln in functions.splitlines())
    for path, count in bi.PCI_BINARIES.items():
        data = cat(image, root, path)
        assert data.count(b"/proc/bus/pci/devices") == count, path
        assert b"\0" in data and data.startswith(b"\x7fELF")
    platforms = debugfs(image, root, f"ls {bi.PLATFORM_DIR}").decode()
    assert "platform.xml.vmw" in platforms and "platform.xml.hyperv" in platforms
    vmw = cat(image, root, f"{bi.PLATFORM_DIR}/platform.xml.vmw").decode()
    assert "/dev/scsi/host0/bus0/target0/lun0/disc" in vmw
    assert "\nbase_init() {\n" in cat(image, root, bi.BRAND_INIT).decode()
    assert cat(image, root, bi.RC_DRIVERS).startswith(b"#!/bin/sh\n")
    inittab = cat(image, root, bi.INITTAB).decode().splitlines()
    active = [ln.split(":", 1)[0] for ln in inittab if re.match(r"^([1-6]|s0):", ln)]
    assert active == ["1", "2", "3", "4", "5", "6", "s0"]
    assert any(re.match(r"^# *1:2345:respawn:", ln) for ln in inittab)
    securetty = cat(image, root, bi.SECURETTY).decode().split()
    assert "tty1" in securetty and "ttyS0" in securetty and "hvc0" not in securetty


@pytest.mark.parametrize("name", PLAIN_LAYOUTS)
def test_edited_files(images: dict[str, Path], name: str) -> None:
    """The runtime-platform variant's brand.init keeps a run-time link to
    the brand's platform.xml in $LHN_RUN, which its consumer reads; every
    other layout's is the tree's."""
    lay, image = bi.LAYOUTS[name], images[name]
    text = cat(image, lay.root, bi.BRAND_INIT).decode()
    tree = (bi.ROOT_TREE / bi.BRAND_INIT.lstrip("/")).read_text()
    if name != "runtime-platform":
        assert lay.edited == () and text == tree
        return
    assert lay.edited == (bi.BRAND_INIT,)
    base_init = text.split("\nbase_init() {\n", 1)[1].split("\n}\n", 1)[0]
    assert base_init.endswith(
        "    rm -f $LHN_RUN/platform.xml\n"
        "    if [ -f $PLATFORM_DIR/platform.xml ]; then\n"
        "        ln -s $PLATFORM_DIR/platform.xml $LHN_RUN/platform.xml\n"
        "    fi\n"
        "    return 0")
    assert "\nLHN_RUN=/etc/lefthand/run\n" in text and "fst -c $LHN_RUN/platform.xml" in text
    assert "platform.xml.$platform" not in text


def _resolve(spec: str, image: Path, lay: bi.Layout) -> int:
    """The partition number an fstab device spec names, from the superblocks."""
    if spec.startswith("/dev/sda"):
        return int(spec.removeprefix("/dev/sda"))
    key, value = spec.split("=", 1)
    for part in lay.partitions:
        if part.fs == "ext3" and superblock(image, part)[key.lower()] == value:
            return part.number
    raise AssertionError(f"{spec} names no partition")


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_fstab_resolves_to_the_layout(images: dict[str, Path], name: str) -> None:
    lay, image = bi.LAYOUTS[name], images[name]
    fstab = {
        fields[1]: fields[0]
        for line in cat(image, lay.root, "/etc/fstab").decode().splitlines()
        if (fields := line.split()) and not fields[0].startswith("#")
    }
    if lay.boot_part is None:
        assert "/boot" not in fstab and fstab["/"] == lay.fstab["/"]
    else:
        assert fstab["/boot"] == lay.fstab["/boot"]
        assert _resolve(fstab["/boot"], image, lay) == lay.boot_part
    assert _resolve(fstab["/"], image, lay) == lay.root_part


@pytest.mark.parametrize("name", LAYOUT_NAMES)
def test_only_one_partition_looks_like_a_root(images: dict[str, Path], name: str) -> None:
    lay, image = bi.LAYOUTS[name], images[name]
    roots = [
        p.number
        for p in lay.partitions
        if p.fs == "ext3"
        and stat(image, p, "/etc/lefthand") is not None
        and stat(image, p, "/etc/inittab") is not None
    ]
    assert roots == [lay.root_part]


@pytest.mark.parametrize("name", [n for n in LAYOUT_NAMES if bi.LAYOUTS[n].boot_part is not None])
def test_boot_partition(images: dict[str, Path], name: str) -> None:
    lay, image = bi.LAYOUTS[name], images[name]
    kernel = cat(image, lay.boot, f"/vmlinuz-{bi.KERNEL_VERSION}")
    assert kernel[0x202:0x206] == b"HdrS"
    pointer = struct.unpack_from("<H", kernel, 0x20E)[0] + 0x200
    assert kernel[pointer:].split(b"\0", 1)[0].split()[0].decode() == bi.KERNEL_VERSION
    assert cat(image, lay.boot, f"/initrd-{bi.KERNEL_VERSION}.img").startswith(b"\x1f\x8b")
    grub = cat(image, lay.boot, "/grub/grub.conf").decode()
    assert f"kernel /vmlinuz-{bi.KERNEL_VERSION}" in grub
    others = [p for p in lay.partitions if p.fs == "ext3" and p.number != lay.boot_part]
    for part in others:
        assert b"vmlinuz" not in debugfs(image, part, "ls /"), part


def test_committed_binaries_match_their_generator() -> None:
    for rel, (data, mode) in make_binaries.generate().items():
        path = bi.FIXTURES / rel
        committed = path.read_bytes()
        if rel.endswith(".img"):  # gzip bytes may vary with zlib: compare the archive
            assert gzip.decompress(committed) == gzip.decompress(data), rel
        else:
            assert committed == data, rel
        assert bool(path.stat().st_mode & 0o100) == bool(mode & 0o100), rel
        assert len(committed) < 64 * 1024, rel


def test_build_is_quick_and_repeatable(images: dict[str, Path], tmp_path: Path) -> None:
    started = time.monotonic()
    out = bi.build_image(tmp_path / "stock.img")
    elapsed = time.monotonic() - started
    print(f"build_image(stock): {elapsed:.2f} s")
    assert data_digest(out) == data_digest(images["stock"])
    out.unlink()
    started = time.monotonic()
    assert bi.main([str(tmp_path / "alt.img"), "--layout", "alt"]) == 0
    print(f"python -m fixtures.build_image --layout alt: {time.monotonic() - started:.2f} s")
    assert data_digest(tmp_path / "alt.img") == data_digest(images["alt"])


def test_size_option_moves_only_the_end_of_the_extended_partition() -> None:
    small = bi.layout_for("stock", 4 * bi.GiB)
    stock = bi.LAYOUTS["stock"]
    for a, b in zip(small.partitions, stock.partitions, strict=True):
        assert a.start == b.start
        assert a.size == b.size or a.type == "5"
    with pytest.raises(ValueError):
        bi.layout_for("stock", bi.GiB)
    assert bi._parse_size("6G") == 6 * bi.GiB and bi._parse_size("512MiB") == 512 * bi.MiB


def test_lhos12_root_is_rhel6_with_upstart_and_its_own_boot(images: dict[str, Path]) -> None:
    """LeftHand OS 12: /boot a directory of the root, upstart jobs, an
    inittab with the runlevel only, glibc 2.12, seven data-disk slots."""
    lay, image = bi.LAYOUTS["lhos12"], images["lhos12"]
    root = lay.root
    assert cat(image, root, "/etc/lefthand/.version").decode().strip().startswith("12.")
    kernel = cat(image, root, f"/boot/vmlinuz-{bi.LHOS12_KERNEL}")
    pointer = struct.unpack_from("<H", kernel, 0x20E)[0] + 0x200
    assert kernel[pointer:].split(b"\0", 1)[0].split()[0].decode() == bi.LHOS12_KERNEL
    grub = cat(image, root, "/boot/grub/grub.conf").decode()
    assert f"kernel /boot/vmlinuz-{bi.LHOS12_KERNEL} ro root=LABEL=/" in grub
    assert f"initrd /boot/initramfs-{bi.LHOS12_KERNEL}.img" in grub
    inittab = [ln for ln in cat(image, root, bi.INITTAB).decode().splitlines() if not ln.startswith("#")]
    assert [ln for ln in inittab if ln.strip()] == ["id:3:initdefault:"]
    assert b"exec /sbin/mingetty" in cat(image, root, "/etc/init/tty.conf")
    assert b"ACTIVE_CONSOLES=" in cat(image, root, "/etc/sysconfig/init")
    assert stat(image, root, "/lib64/libc-2.12.so") is not None
    assert stat(image, root, "/lib64/libc-2.5.so") is None
    vmw = cat(image, root, f"{bi.PLATFORM_DIR}/platform.xml.vmw").decode()
    assert [f"target{t}" in vmw for t in range(7)] == [True] * 7
    assert all(b"vmlinuz" not in debugfs(image, p, "ls /") for p in lay.partitions if p.fs == "ext3")
