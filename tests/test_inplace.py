"""convert --in-place on a copy of the example image: the same guest files as
a copying convert of the same disk, only the root and boot partitions
written, a second run writing no byte and keeping the identity of the
config it replaces; a disk held open for writing, and compressed or packed
inputs, refused before anything is written.

The disk's partitions are compared by their bytes (the data regions the
tests' own walk finds), the guest files through read-only drives of a
libguestfs handle of the tests' own: the module's one launch (`launched`),
which also writes the VSA's own upgrade on a copy of the disk."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support import DebianKernel, Run, data_extents, fingerprint, nobody_dir, run_cli
from xl_reader import parse as parse_xl

pytestmark = pytest.mark.integration

UUID = "4c484e21-0000-4000-8000-00000000be27"
MAC = "00:16:3e:27:27:27"
NEW_VERSION = "10.0.00.1896"

Files = dict[str, tuple[int, str]]  # path -> (mode, content hash or link target)


@dataclass(frozen=True)
class InPlace:
    disk: Path
    copy: Path  # the copying convert's output of the same disk
    before: dict[int, str]  # partition number -> hash of its bytes, before
    after_first: dict[int, str]
    after_second: dict[int, str]
    first: Run
    second: Run
    cfg_first: bytes
    cfg_second: bytes
    initrd_first: bytes
    initrd_second: bytes


def _partitions(image: Path) -> dict[int, tuple[int, int]]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    return {int(p["node"][len(str(image)):]): (p["start"] * 512, (p["start"] + p["size"]) * 512)
            for p in table["partitions"] if p["type"] != "5"}


def _hashes(image: Path) -> dict[int, str]:
    """Each partition's bytes, hashed over its data regions and their offsets."""
    extents = data_extents(image)
    found = {}
    with image.open("rb") as f:
        for number, (start, end) in _partitions(image).items():
            h = hashlib.sha256()
            for a, b in extents:
                a, b = max(a, start), min(b, end)
                if a >= b:
                    continue
                h.update(f"@{a}".encode())
                f.seek(a)
                while f.tell() < b:
                    h.update(f.read(min(2**20, b - f.tell())))
            found[number] = h.hexdigest()
    return found


@pytest.fixture(scope="module")
def in_place(example_image: Path, debian_kernel: DebianKernel) -> InPlace:
    d = nobody_dir() / "in-place"
    d.mkdir()
    disk, src = d / "vsa.img", d / "stock.img"
    for target in (disk, src):
        subprocess.run(["cp", "--sparse=always", str(example_image), str(target)], check=True)
    common = ("--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd, "--modules", "minimal",
              "--json")
    copy = run_cli("convert", src, "-o", d / "copy.img", *common)
    assert copy.code == 0, copy.stderr
    before = _hashes(disk)
    first = run_cli("convert", "--in-place", disk, "--uuid", UUID, "--mac", MAC, "--name", "vsa27", *common)
    assert first.code == 0, first.stderr
    after_first = _hashes(disk)
    cfg_first, initrd_first = (d / "vsa.cfg").read_bytes(), (d / "vsa.initrd").read_bytes()
    second = run_cli("convert", "--in-place", disk, *common)
    assert second.code == 0, second.stderr
    return InPlace(disk, d / "copy.img", before, after_first, _hashes(disk), first, second, cfg_first,
                   (d / "vsa.cfg").read_bytes(), initrd_first, (d / "vsa.initrd").read_bytes())


def _guest_files(g: Any, disk: str, root: int, boot: int) -> Files:
    """A disk's root and boot filesystems (`disk` a device of the launched
    handle `g`, attached read-only): path -> (mode, content hash or link
    target)."""
    g.mount_ro(f"{disk}{root}", "/")
    try:
        g.mount_ro(f"{disk}{boot}", "/boot")
        found: Files = {}
        for rel in g.find("/"):
            p = "/" + rel
            st = g.lstatns(p)
            mode = st["st_mode"]
            if mode & 0o170000 == 0o100000:
                found[p] = (mode, g.checksum("sha256", p))
            elif mode & 0o170000 == 0o120000:
                found[p] = (mode, g.readlink(p))
            else:
                found[p] = (mode, "")
        return found
    finally:
        g.umount_all()  # the next part mounts at / again


def _upgrade(g: Any, disk: str, shipped: str, work: Path) -> None:
    """What the VSA's upgrader leaves on the disk, written as it writes it:
    the root as shipped (from a stock image) in the other slot, p2, with a
    newer version, its fstab naming /dev/sda2, and a new default grub entry
    booting it, the kernel and initrd of the first entry. `disk` and
    `shipped` are devices of the launched handle `g`, `disk` the writable one."""
    try:
        g.mount_ro(f"{shipped}5", "/")
        g.tar_out("/", str(work / "root.tar"))
        g.umount_all()
        g.mount(f"{disk}2", "/")
        for name in g.ls("/"):
            if name != "lost+found":
                g.rm_rf(f"/{name}")
        g.tar_in(str(work / "root.tar"), "/")
        g.write("/etc/lefthand/.version", f"{NEW_VERSION}\n")
        fstab = g.cat("/etc/fstab").replace("/dev/sda5 ", "/dev/sda2 ", 1)
        g.write("/etc/fstab", fstab)
        g.umount_all()
        g.mount(f"{disk}1", "/")
        grub = g.cat("/grub/grub.conf")
        lines = grub.splitlines()
        kernel = next(line for line in lines if line.strip().startswith("kernel "))
        initrd = next(line for line in lines if line.strip().startswith("initrd "))
        entries = sum(line.startswith("title") for line in lines)
        new_kernel = " ".join(w if not w.startswith("root=") else "root=/dev/sda2" for w in kernel.split(" "))
        grub = "\n".join(f"default={entries}" if line.startswith("default=") else line for line in lines)
        entry = f"title SAN/iQ {NEW_VERSION}\n\troot (hd0,0)\n{new_kernel}\n{initrd}\n"
        g.write("/grub/grub.conf", f"{grub}\n{entry}")
    finally:
        g.umount_all()


@dataclass(frozen=True)
class Launched:
    files: tuple[Files, Files]  # those of in_place.disk, then of in_place.copy
    upgraded: Path  # a copy of in_place.disk, upgraded as the VSA upgrades itself


@pytest.fixture(scope="module")
def launched(in_place: InPlace, example_image: Path) -> Launched:
    """The module's own libguestfs handle, launched once (a launch costs
    ~20 s under TCG) for its two parts, which need only `in_place`'s finished
    outputs: the guest files of the in-place and the copying output, read
    through read-only drives, and the VSA's upgrade, written on a copy of the
    in-place disk, the one writable drive. The handle is shut down (its
    writes flushed to the copy) and closed before the copy is handed on to
    the CLI runs of `upgraded`, which must not open it while it is attached."""
    import guestfs

    d = in_place.disk.parent
    upgraded = d / "upgraded.img"
    subprocess.run(["cp", "--sparse=always", str(in_place.disk), str(upgraded)], check=True)
    g = guestfs.GuestFS(python_return_dict=True)
    # In this order, /dev/sda to /dev/sdd.
    g.add_drive_opts(str(upgraded), readonly=False, format="raw")
    g.add_drive_opts(str(example_image), readonly=True, format="raw")  # the root as shipped
    g.add_drive_opts(str(in_place.disk), readonly=True, format="raw")
    g.add_drive_opts(str(in_place.copy), readonly=True, format="raw")
    g.launch()
    try:
        target, shipped, disk, copy = g.list_devices()
        doc = in_place.first.doc
        root, boot = doc["root_partition"], doc["boot_partition"]
        files = _guest_files(g, disk, root, boot), _guest_files(g, copy, root, boot)
        _upgrade(g, target, shipped, d)
        g.shutdown()
    finally:
        g.close()
    return Launched(files, upgraded)


def test_in_place_gives_the_guest_files_of_a_copying_convert(launched: Launched) -> None:
    disk, copy = launched.files
    assert disk.keys() == copy.keys()
    differ = sorted(p for p in disk if disk[p] != copy[p])
    assert not differ, differ


def test_in_place_writes_only_the_partitions_an_edit_changes(in_place: InPlace) -> None:
    doc = in_place.first.doc
    written = {n for n in in_place.before if in_place.before[n] != in_place.after_first[n]}
    assert written == {doc["root_partition"], doc["boot_partition"]}
    assert doc["in_place"] is True and doc["outputs"]["image"] == str(in_place.disk)


def test_a_second_in_place_run_changes_no_byte(in_place: InPlace) -> None:
    assert in_place.after_second == in_place.after_first
    assert in_place.cfg_second == in_place.cfg_first
    assert in_place.initrd_second == in_place.initrd_first
    assert all(s["status"] in ("already applied", "skipped") for s in in_place.second.doc["steps"]
               if s["step"] not in ("initrd", "xl")), in_place.second.doc["steps"]


def test_in_place_keeps_the_identity_of_the_config_it_replaces(in_place: InPlace) -> None:
    cfg = parse_xl(in_place.cfg_second.decode())
    assert cfg["uuid"] == UUID and cfg["name"] == "vsa27"
    assert f"mac={MAC}" in str(cfg["vif"])
    assert str(in_place.disk) in str(cfg["disk"])
    kept = in_place.second.doc["kept_from_config"]
    assert {"uuid", "mac", "name"} <= set(kept["settings"])


def test_in_place_refuses_a_disk_open_for_writing(example_image: Path, debian_kernel: DebianKernel,
                                                  tmp_path: Path) -> None:
    disk = tmp_path / "vsa.img"
    subprocess.run(["cp", "--sparse=always", str(example_image), str(disk)], check=True)
    holder = subprocess.Popen(["sh", "-c", 'exec 3<>"$1"; echo; sleep 120', "sh", str(disk)],
                              stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        holder.stdout.readline()  # the fd is open
        r = run_cli("convert", "--in-place", disk, "--kernel", debian_kernel.vmlinuz,
                    "--initrd", debian_kernel.initrd, "-q", timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert r.code == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert f"process {holder.pid} (sh)" in lines[0] and "open for writing" in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "vsa.cfg").exists() and not (tmp_path / "vsa.initrd").exists()


@pytest.mark.parametrize("kind", ["gzip", "ova"])
def test_in_place_refuses_compressed_and_packed_inputs(example_image: Path, debian_kernel: DebianKernel,
                                                       tmp_path: Path, kind: str) -> None:
    from fixtures.formats import cached_variant

    shared = cached_variant(example_image, kind)
    disk = tmp_path / shared.name
    shutil.copyfile(shared, disk)
    before = fingerprint(disk)
    r = run_cli("convert", "--in-place", disk, "--kernel", debian_kernel.vmlinuz,
                "--initrd", debian_kernel.initrd, "-q", timeout=120)
    assert r.code == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert "cannot be converted in place" in lines[0] and str(disk) in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == [disk.name]
    assert fingerprint(disk) == before


# --- after the VSA's own upgrade ---------------------------------------------

@dataclass(frozen=True)
class Upgraded:
    disk: Path
    inspected: Run
    verified: Run
    before: dict[int, str]
    converted: Run
    after: dict[int, str]
    inspected_after: Run


@pytest.fixture(scope="module")
def upgraded(in_place: InPlace, launched: Launched, debian_kernel: DebianKernel) -> Upgraded:
    disk = launched.upgraded  # its handle shut down and closed
    (disk.parent / "upgraded.cfg").write_bytes(in_place.cfg_second)
    inspected = run_cli("inspect", disk, "--json")
    verified = run_cli("verify", disk, "--json")
    before = _hashes(disk)
    converted = run_cli("convert", "--in-place", disk, "--kernel", debian_kernel.vmlinuz,
                        "--initrd", debian_kernel.initrd, "--modules", "minimal", "--json")
    assert converted.code == 0, converted.stderr
    return Upgraded(disk, inspected, verified, before, converted, _hashes(disk),
                    run_cli("inspect", disk, "--json"))


def test_inspect_and_verify_say_the_vsa_boots_an_unconverted_slot(upgraded: Upgraded) -> None:
    line = (f"the VSA now boots slot p2, version {NEW_VERSION}, which is not converted: run "
            f"`vsaimage convert --in-place {upgraded.disk}`")
    assert upgraded.inspected.code == 0, upgraded.inspected.stderr
    assert upgraded.inspected.doc["unconverted_slot"].startswith(line)
    assert line in upgraded.inspected.stderr
    assert upgraded.verified.doc["unconverted_slot"].startswith(line)
    assert line in upgraded.verified.stderr


def test_in_place_converts_the_slot_the_vsa_upgraded_into(upgraded: Upgraded) -> None:
    doc = upgraded.converted.doc
    assert doc["root_partition"] == 2
    cfg = parse_xl((upgraded.disk.parent / "upgraded.cfg").read_text())
    assert cfg["root"] == "/dev/xvda2"
    assert cfg["uuid"] == UUID and f"mac={MAC}" in str(cfg["vif"]) and cfg["name"] == "vsa27"
    written = {n for n in upgraded.before if upgraded.before[n] != upgraded.after[n]}
    assert written == {1, 2}, "the slot converted before must keep its bytes"
    assert upgraded.inspected_after.doc["unconverted_slot"] is None
    assert upgraded.inspected_after.doc["root"]["partition"] == 2
