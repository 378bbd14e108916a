"""inspect --bundle: the tarball a user sends back instead of the disk, and the
init system, md RAID and LVM facts inspect reports.

Two launches in all: the example image (every bundle check reads one run) and
a small image with md RAID1 members and an LVM PV beside a tiny VSA root."""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import tarfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.build_image import (
    BRAND_INIT,
    EPOCH,
    INITTAB,
    KERNEL_VERSION,
    LAYOUTS,
    LHN_FUNCTIONS,
    PCI_BINARIES,
    RC_DRIVERS,
    ROOT_TREE,
    SECURETTY,
    VSA_VERSION,
)
from support import Run, run_cli
from vsaimage import __version__
from vsaimage.commands import bundle
from vsaimage.edits import GuestFile
from vsaimage.guest.appliance import Partition

PCI_PATH = b"/proc/bus/pci/devices"
RULES = sorted("/" + str(p.relative_to(ROOT_TREE)) for p in (ROOT_TREE / "etc/udev/rules.d").iterdir())
TEXT_FILES = sorted([LHN_FUNCTIONS, BRAND_INIT, RC_DRIVERS, INITTAB, SECURETTY, "/etc/fstab",
                     "/etc/lefthand/.version", *RULES])


@dataclass(frozen=True)
class Bundle:
    run: Run
    path: Path
    raw: bytes
    members: list[tarfile.TarInfo]
    data: dict[str, bytes]

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.data["manifest.json"])  # type: ignore[no-any-return]


def open_bundle(run: Run, path: Path) -> Bundle:
    raw = path.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        members = tar.getmembers()
        data = {m.name: tar.extractfile(m).read() for m in members}  # type: ignore[union-attr]
    return Bundle(run, path, raw, members, data)


def assert_one_line_error(r: Run, *needles: str) -> None:
    assert r.code == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vsaimage: error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


# --- the example image: one launch for every check ---------------------------


@pytest.fixture(scope="module")
def stock_bundle(example_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    d = tmp_path_factory.mktemp("bundle")
    out = d / "vsa-report.tar.gz"
    out.write_bytes(b"an old bundle")  # --force replaces it
    r = run_cli("inspect", example_image, "--json", "--bundle", out, "--force")
    assert r.code == 0, r.stderr
    assert sorted(p.name for p in d.iterdir()) == [out.name], "a temporary was left behind"
    return open_bundle(r, out)


@pytest.mark.integration
def test_manifest_partitions_and_roles(stock_bundle: Bundle) -> None:
    m = stock_bundle.manifest
    layout = LAYOUTS["stock"]
    assert m["bundle_format"] == 1 and m["tool_version"] == __version__
    assert [(p["number"], p["start"], p["size"], p["mbr_id"]) for p in m["partitions"]] == [
        (p.number, p.start, p.size, f"0x{int(p.type, 16):02x}") for p in layout.partitions]
    for got, want in zip(m["partitions"], layout.partitions, strict=True):
        assert (got["fstype"], got["label"], got["uuid"]) == (want.fs, want.label or None, want.uuid or None)
    assert m["root"]["partition"] == layout.root_part and m["root"]["reason"]
    assert m["boot"]["partition"] == layout.boot_part and m["boot"]["reason"]
    assert m["vsa_version"] == VSA_VERSION
    assert m["kernels"] == {"modules": [KERNEL_VERSION], "boot": [f"vmlinuz-{KERNEL_VERSION}"]}
    assert m["init_system"]["name"] == "sysvinit"
    evidence = m["init_system"]["evidence"]
    assert evidence[0].startswith("/sbin/init: ELF program naming 'INIT_VERSION=sysvinit-")
    assert evidence[1].startswith(f"{INITTAB}: ")
    assert m["md_arrays"] == [] and m["lvm"] == []
    assert {e["step"] for e in m["edits"]} >= {"mobo-uuid", "pci", "console"}


@pytest.mark.integration
def test_only_the_listed_files(stock_bundle: Bundle) -> None:
    names = [m.name for m in stock_bundle.members]
    assert names == sorted(names)
    assert names == sorted(["manifest.json", *(bundle.member_name(p) for p in TEXT_FILES)])
    entries = {e["path"]: e for e in stock_bundle.manifest["files"]}
    for path in TEXT_FILES:
        data = stock_bundle.data[bundle.member_name(path)]
        assert entries[path]["status"] == "copied" and entries[path]["size"] == len(data)
        if path == "/etc/fstab":  # the builder writes the layout's device names into it
            assert all(spec in data.decode() for spec in LAYOUTS["stock"].fstab.values())
        else:
            assert data == (ROOT_TREE / path.lstrip("/")).read_bytes(), path
    assert entries["/etc/udev/rules.d/"] == {"path": "/etc/udev/rules.d/", "status": "directory",
                                             "entries": len(RULES)}
    for binary in PCI_BINARIES:  # never the binaries themselves
        local = (ROOT_TREE / binary.lstrip("/")).read_bytes()
        assert all(local not in data for data in stock_bundle.data.values()), binary


@pytest.mark.integration
def test_binaries_sizes_and_offsets(stock_bundle: Bundle) -> None:
    entries = {e["path"]: e for e in stock_bundle.manifest["binaries"]}
    assert sorted(entries) == sorted(PCI_BINARIES)
    for path, count in PCI_BINARIES.items():
        local = (ROOT_TREE / path.lstrip("/")).read_bytes()
        e = entries[path]
        assert e["status"] == "present" and e["size"] == len(local) and e["mode"] == "0755"
        assert e["offsets"]["/proc/bus/pci/devices"] == bundle.offsets(local, PCI_PATH)
        assert len(e["offsets"]["/proc/bus/pci/devices"]) == count
        assert e["offsets"]["/hack/bus/pci/devices"] == []


@pytest.mark.integration
def test_tarball_is_deterministic(stock_bundle: Bundle) -> None:
    raw = stock_bundle.raw
    assert raw[:3] == b"\x1f\x8b\x08" and raw[3] & 0x08 == 0, "no file name in the gzip header"
    assert struct.unpack_from("<I", raw, 4)[0] == 0, "gzip mtime"
    for m in stock_bundle.members:
        assert (m.mtime, m.uid, m.gid, m.mode, m.isfile()) == (0, 0, 0, 0o644, True), m.name
    # the same manifest and files give the same bytes
    files = {p: GuestFile(p, stock_bundle.data[bundle.member_name(p)]) for p in TEXT_FILES}
    assert bundle.tarball(stock_bundle.manifest, files) == stock_bundle.raw


@pytest.mark.integration
def test_inspect_json_fields(stock_bundle: Bundle) -> None:
    doc = stock_bundle.run.doc
    assert doc["bundle"] == str(stock_bundle.path)
    assert doc["init_system"]["name"] == "sysvinit"
    assert doc["md_arrays"] == [] and doc["lvm"] == []
    assert stock_bundle.run.stderr.count("appliance launch: done") == 1


# --- md RAID1 members and an LVM PV ------------------------------------------

MD_UUID = uuid.UUID("0f5b21c8-3d0e-4a5e-9c41-6b0d2f3e8a17")
MD_NAME = "vsa-test:0"
PV_UUID = "Qm3kXh-8c2T-Ue9L-ww2P-KnA1-bV7d-r4SxYz"
SECTOR = 512
# (number, start sector, sectors, MBR type)
MD_IMAGE_PARTS = ((1, 2048, 40960, "83"), (2, 43008, 16384, "fd"), (3, 59392, 16384, "fd"),
                  (4, 75776, 16384, "8e"))


def md_superblock(set_uuid: uuid.UUID, name: str, dev_number: int, part_sectors: int) -> bytes:
    """A version-1.2 md superblock of a clean two-disk RAID1 member (Linux
    `struct mdp_superblock_1`), with its checksum; it goes 4 KiB into the
    partition."""
    data_offset = 2048
    sb = bytearray(256 + 2 * 2)  # the fixed part, then dev_roles[max_dev = 2]
    struct.pack_into("<IIII16s32sQIIQIII", sb, 0, 0xA92B4EFC, 1, 0, 0, set_uuid.bytes,
                     name.encode(), EPOCH, 1, 0, part_sectors - data_offset, 0, 2, 0)
    struct.pack_into("<QQQQII16s", sb, 128, data_offset, part_sectors - data_offset, 4096 // SECTOR,
                     0, dev_number, 0, uuid.uuid5(set_uuid, str(dev_number)).bytes)
    struct.pack_into("<QQQII", sb, 192, EPOCH, 1, 2**64 - 1, 0, 2)
    struct.pack_into("<HH", sb, 256, 0, 1)
    total = sum(struct.unpack_from(f"<{len(sb) // 4}I", sb))
    struct.pack_into("<I", sb, 216, ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF)
    return bytes(sb)


def lvm_label(pv_uuid: str, size: int) -> bytes:
    """An LVM2 PV label (sector 1 of the partition): label header, PV header
    with one data area; its CRC is LVM's (CRC-32 started from 0xf597a6cf,
    no final inversion)."""
    sector = bytearray(SECTOR)
    struct.pack_into("<8sQIi8s32sQQQQQQQ", sector, 0, b"LABELONE", 1, 0, 32, b"LVM2 001",
                     pv_uuid.replace("-", "").encode(), size, 2**20, 0, 0, 0, 0, 0)
    crc = ~zlib.crc32(bytes(sector[20:]), 0xF597A6CF ^ 0xFFFFFFFF) & 0xFFFFFFFF
    struct.pack_into("<I", sector, 16, crc)
    return bytes(sector)


def host_blkid(image: Path, start: int, size: int) -> dict[str, str]:
    r = subprocess.run(["blkid", "-p", "-o", "export", "-O", str(start), "-S", str(size), str(image)],
                       capture_output=True, text=True, check=True)
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


@pytest.fixture(scope="module")
def md_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Partition 1: a tiny VSA-like root (etc/lefthand/.version and
    etc/inittab only); 2 and 3: md RAID1 members; 4: an LVM PV."""
    d = tmp_path_factory.mktemp("md")
    img = d / "md.img"
    subprocess.run(["truncate", "-s", "48M", str(img)], check=True)
    table = "".join(f"start={s}, size={n}, type={t}\n" for _, s, n, t in MD_IMAGE_PARTS)
    subprocess.run(["sfdisk", "-q", str(img)], input=table, text=True, check=True)
    tree = d / "tree"
    (tree / "etc/lefthand").mkdir(parents=True)
    (tree / "etc/lefthand/.version").write_text("md-test\n")
    (tree / "etc/inittab").write_bytes((ROOT_TREE / "etc/inittab").read_bytes())
    _, start, sectors, _ = MD_IMAGE_PARTS[0]
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext3", "-d", str(tree), "-E", f"offset={start * SECTOR}",
                    str(img), f"{sectors * SECTOR // 1024}k"], check=True)
    with img.open("r+b") as f:
        for number, start, sectors, _ in MD_IMAGE_PARTS[1:3]:
            f.seek(start * SECTOR + 4096)
            f.write(md_superblock(MD_UUID, MD_NAME, number - 2, sectors))
        _, start, sectors, _ = MD_IMAGE_PARTS[3]
        f.seek(start * SECTOR + SECTOR)
        f.write(lvm_label(PV_UUID, sectors * SECTOR))
    return img


def test_crafted_superblocks_read_by_host_blkid(md_image: Path) -> None:
    """What the appliance's blkid will see, checked with the host's."""
    for _, start, sectors, _ in MD_IMAGE_PARTS[1:3]:
        info = host_blkid(md_image, start * SECTOR, sectors * SECTOR)
        assert (info["TYPE"], info["UUID"], info["LABEL"], info["VERSION"]) == (
            "linux_raid_member", str(MD_UUID), MD_NAME, "1.2")
    _, start, sectors, _ = MD_IMAGE_PARTS[3]
    info = host_blkid(md_image, start * SECTOR, sectors * SECTOR)
    assert (info["TYPE"], info["UUID"]) == ("LVM2_member", PV_UUID)


@pytest.mark.integration
def test_md_raid1_and_lvm_reported(md_image: Path, tmp_path: Path) -> None:
    out = tmp_path / "md-report.tar.gz"
    r = run_cli("inspect", md_image, "--json", "--bundle", out)
    assert r.code == 0, r.stderr
    md = [{"uuid": str(MD_UUID), "name": MD_NAME, "members": [2, 3]}]
    lvm = [{"partition": 4, "uuid": PV_UUID}]
    assert (r.doc["md_arrays"], r.doc["lvm"]) == (md, lvm)
    assert r.doc["root"]["partition"] == 1
    b = open_bundle(r, out)
    m = b.manifest
    assert (m["md_arrays"], m["lvm"]) == (md, lvm)
    assert [p["fstype"] for p in m["partitions"]] == ["ext3", "linux_raid_member", "linux_raid_member",
                                                      "LVM2_member"]
    assert m["vsa_version"] == "md-test" and m["init_system"]["name"] == "sysvinit"
    # everything else the edits read is missing, and listed as such
    status = {e["path"]: e["status"] for e in m["files"]}
    assert status == {**dict.fromkeys((LHN_FUNCTIONS, BRAND_INIT, RC_DRIVERS, SECURETTY, "/etc/fstab",
                                       "/etc/udev/rules.d/"), "missing"),
                      INITTAB: "copied", "/etc/lefthand/.version": "copied"}
    assert {e["status"] for e in m["binaries"]} == {"missing"}
    assert [x.name for x in b.members] == ["files/etc/inittab", "files/etc/lefthand/.version",
                                           "manifest.json"]


def test_md_human_lines() -> None:
    """The same facts as human lines, drawn from the document."""
    from vsaimage.cli.render import Screen, show_inspect

    doc = {"image": "md.img", "partitions": [], "root": {"partition": 1, "reason": "r"},
           "boot": None, "init_system": {"name": "sysvinit", "evidence": [INITTAB]},
           "md_arrays": [{"uuid": str(MD_UUID), "name": MD_NAME, "members": [2, 3]}],
           "lvm": [{"partition": 4, "uuid": PV_UUID}], "edits": [], "bundle": "x.tar.gz"}
    out = io.StringIO()
    show_inspect(Screen(out), doc)
    text = " ".join(out.getvalue().split())  # rich wraps long lines at the console width
    assert f"array {MD_NAME} uuid {MD_UUID}: partitions 2, 3" in text
    assert f"PV on partition 4 uuid {PV_UUID}" in text
    assert "sysvinit (/etc/inittab)" in text and "x.tar.gz" in text


# --- bad --bundle paths: refused before any launch ---------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Path:
    """Enough to pass the host-side checks (an MBR signature); never launched."""
    p = tmp_path / "disk.img"
    p.write_bytes(bytes(510) + b"\x55\xaa" + bytes(2**20 - 512))
    return p


def test_existing_bundle_without_force(tiny_disk: Path, tmp_path: Path) -> None:
    out = tmp_path / "old.tar.gz"
    out.write_bytes(b"keep me")
    r = run_cli("inspect", tiny_disk, "--bundle", out)
    assert_one_line_error(r, str(out), "already exists", "--force")
    assert out.read_bytes() == b"keep me"
    assert "appliance" not in r.stderr


def test_bundle_directory_missing(tiny_disk: Path, tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "b.tar.gz"
    r = run_cli("inspect", tiny_disk, "--bundle", out, "--json")
    assert_one_line_error(r, str(out), "does not exist")
    assert r.doc["error"]["kind"] == "output"
    assert "appliance" not in r.stderr


def test_bundle_onto_the_image(tiny_disk: Path) -> None:
    r = run_cli("inspect", tiny_disk, "--bundle", tiny_disk, "--force")
    assert_one_line_error(r, "same file as input")


# --- the pure parts ----------------------------------------------------------


def _part(number: int, fstype: str, label: str = "", uid: str = "") -> Partition:
    return Partition(number, f"/dev/sda{number}", number * 2**20, 2**20, 0xFD, fstype, label, uid)


def test_md_and_lvm_grouping() -> None:
    parts = [_part(1, "ext3"), _part(2, "linux_raid_member", "h:0", "u1"), _part(3, "LVM2_member", "", "pv"),
             _part(5, "linux_raid_member", "h:1", "u2"), _part(6, "linux_raid_member", "h:0", "u1")]
    assert bundle.md_arrays(parts) == [{"uuid": "u1", "name": "h:0", "members": [2, 6]},
                                       {"uuid": "u2", "name": "h:1", "members": [5]}]
    assert bundle.lvm_members(parts) == [{"partition": 3, "uuid": "pv"}]
    assert bundle.md_arrays([_part(1, "ext3")]) == []


def test_offsets() -> None:
    assert bundle.offsets(b"xx/proc/bus/pci/devices\0/proc/bus/pci/devices", PCI_PATH) == [2, 24]
    assert bundle.offsets(b"aaa", b"aa") == [0, 1]
    assert bundle.offsets(b"", PCI_PATH) == []


def test_manifest_entries_and_tarball() -> None:
    doc = {"tool_version": "9.9", "partitions": [], "root": None, "boot": None}
    gathered = bundle.Gathered(
        files={"/etc/inittab": GuestFile("/etc/inittab", b"id:3:initdefault:\n", 0o644,
                                         real="/etc/sysconfig/inittab"),
               "/etc/fstab": GuestFile("/etc/fstab", None),
               "/etc/securetty": GuestFile("/etc/securetty", None,
                                           error="/etc/securetty is a dangling symlink (-> x)")},
        rules_dir=False,
        binaries={"/sbin/hwid": GuestFile("/sbin/hwid", b"\x7fELF" + PCI_PATH, 0o750)},
    )
    m = bundle.manifest(doc, gathered, "vsa.img")
    status = {e["path"]: e["status"] for e in m["files"]}
    assert status == {"/etc/inittab": "copied", "/etc/fstab": "missing", "/etc/securetty": "unusable",
                      "/etc/udev/rules.d/": "missing"}
    by_path = {e["path"]: e for e in m["files"]}
    assert by_path["/etc/inittab"]["resolves_to"] == "/etc/sysconfig/inittab"
    assert "dangling" in by_path["/etc/securetty"]["error"]
    assert m["binaries"] == [{"path": "/sbin/hwid", "status": "present", "size": 25, "mode": "0750",
                              "offsets": {"/proc/bus/pci/devices": [4], "/hack/bus/pci/devices": []}}]
    one = bundle.tarball(m, gathered.files)
    assert one == bundle.tarball(m, dict(reversed(gathered.files.items())))
    with tarfile.open(fileobj=io.BytesIO(one), mode="r:gz") as tar:
        assert tar.getnames() == ["files/etc/inittab", "manifest.json"]
    assert gzip.decompress(one)  # a plain gzip stream
