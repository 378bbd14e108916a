"""Every input format converted as a user types it (`--modules minimal`, one
appliance launch each), its output read back with the raw input's conversion
in ONE separate read-only launch: the root and boot filesystems must hold the
same files with the same contents, modes and owners. Then inspect on an OVA
and verify on a packed input and on a qcow2 output."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.formats import OVA_DATA_DISK, OVA_VM_NAME, VARIANTS, cached_variant
from support import DebianKernel, Run, data_extents, nobody_dir, run_cli

pytestmark = pytest.mark.integration

# name -> output format; the vhdx input also checks a qcow2 output
CONVERTS = {"raw": "raw", **{name: "raw" for name in VARIANTS}, "vhdx": "qcow2"}


@dataclass(frozen=True)
class Conversion:
    input: Path
    before: dict[Path, str]  # fingerprint of every file of the input
    out: Path
    format: str
    run: Run


def _content_print(path: Path) -> str:
    """sha256 of the size, mtime and every non-zero aligned 64 KiB block
    with its offset. Unlike support.fingerprint, it does not depend on where
    the filesystem reports holes: qemu-img preallocates parts of the files
    it writes, and the unwritten extents read as data while their pages are
    cached, as holes once they are evicted (so blocks are aligned to the
    file, not to the extents)."""
    h = hashlib.sha256()
    st = path.stat()
    h.update(f"{st.st_size} {st.st_mtime_ns}".encode())
    size = 2**16
    zero = bytes(size)
    blocks = sorted({b for start, end in data_extents(path) for b in range(start // size, -(-end // size))})
    with open(path, "rb") as f:
        for b in blocks:
            f.seek(b * size)
            block = f.read(size)
            if block != zero[:len(block)]:
                h.update(f"@{b}".encode() + block)
    return h.hexdigest()


def _fingerprints(image: Path, *, alone: bool) -> dict[Path, str]:
    """The input and, unless `alone`, every file beside it (a VMDK's extents:
    each variant has a directory of its own)."""
    return {p: _content_print(p) for p in ([image] if alone else sorted(image.parent.iterdir()))}


@pytest.fixture(scope="module")
def conversions(example_image: Path, debian_kernel: DebianKernel) -> dict[str, Conversion]:
    done = {}
    for name, fmt in CONVERTS.items():
        src = example_image if name == "raw" else cached_variant(example_image, name)
        d = nobody_dir() / "formats" / name
        d.mkdir(parents=True)
        out = d / "vsa-xen.img"
        before = _fingerprints(src, alone=name == "raw")
        r = run_cli("convert", src, "--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd,
                    "-o", out, "--modules", "minimal", "--format", fmt, "--json")
        done[name] = Conversion(src, before, out, fmt, r)
    return done


@pytest.mark.parametrize("name", sorted(CONVERTS))
def test_each_format_converts(conversions: dict[str, Conversion], name: str) -> None:
    c = conversions[name]
    assert c.run.code == 0, c.run.stderr
    doc = c.run.doc
    facts = doc["input_facts"]
    assert facts["format"] == ("raw" if name == "raw" else VARIANTS[name].format)
    assert facts["virtual_size"] == 6 * 2**30
    assert doc["outputs"]["format"] == c.format
    assert [s["step"] for s in doc["steps"] if s["status"] not in ("applied", "already applied")] == [
        "bootloader"]  # --boot direct: not used
    assert _fingerprints(c.input, alone=name == "raw") == c.before, "the input was written"
    assert not list(c.out.parent.glob("*.partial"))
    if name == "ova":
        assert facts["ova"]["vm_name"] == OVA_VM_NAME and facts["ova"]["system_disk"] == 1


def _listing(tar_bytes: bytes) -> dict[str, tuple[object, ...]]:
    """name -> (type, mode, uid, gid, sha256 of the content or link target)."""
    out: dict[str, tuple[object, ...]] = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isfile() else None
            data = f.read() if f is not None else m.linkname.encode()
            out[m.name] = (m.type, stat.S_IMODE(m.mode), m.uid, m.gid, hashlib.sha256(data).hexdigest())
    return out


def test_outputs_hold_the_raw_conversions_files(conversions: dict[str, Conversion], tmp_path: Path) -> None:
    import guestfs

    converted = {n: c for n, c in conversions.items() if c.run.code == 0}
    assert "raw" in converted
    g = guestfs.GuestFS(python_return_dict=True)
    for c in converted.values():
        g.add_drive_opts(str(c.out), readonly=True, format=c.format)
    g.launch()
    listings: dict[str, dict[str, dict[str, tuple[object, ...]]]] = {}
    try:
        for dev, (name, c) in zip(g.list_devices(), converted.items(), strict=True):
            doc = c.run.doc
            listings[name] = {}
            for role in ("root", "boot"):
                g.mount_ro(f"{dev}{doc[f'{role}_partition']}", "/")
                tar = tmp_path / f"{name}-{role}.tar"
                g.tar_out("/", str(tar), numericowner=True)
                g.umount_all()
                listings[name][role] = _listing(tar.read_bytes())
    finally:
        g.close()
    baseline = listings["raw"]
    assert len(baseline["root"]) > 100 and len(baseline["boot"]) > 3
    for name, listing in listings.items():
        for role in ("root", "boot"):
            differ = sorted(set(listing[role].items()) ^ set(baseline[role].items()))
            assert not differ, f"{name} {role}: {differ[:5]}"
    assert set(listings) == set(CONVERTS)


def test_inspect_ova_names_vm_and_disks(example_image: Path) -> None:
    ova = cached_variant(example_image, "ova")
    r = run_cli("inspect", ova, "--json")
    assert r.code == 0, r.stderr
    facts = r.doc["input_facts"]
    assert facts["format"] == "ova" and facts["unpacked_format"] == "vmdk"
    assert facts["ova"]["vm_name"] == OVA_VM_NAME
    assert [d["file"] for d in facts["ova"]["disks"]] == ["vsa-disk1.vmdk", OVA_DATA_DISK]
    assert facts["ova"]["system_disk"] == 1
    assert r.doc["root"]["partition"] == 5
    text = run_cli("inspect", ova)
    assert "OVA disks" in text.stdout + text.stderr


def test_verify_reads_a_packed_input(example_image: Path, tmp_path: Path) -> None:
    """verify on the unconverted zstd image: it is read (through a temporary
    copy, removed after) and found unconverted, exit 1."""
    r = run_cli("verify", cached_variant(example_image, "zstd"), "--json", env={"TMPDIR": str(tmp_path)})
    assert r.code == 1, r.stderr
    assert r.doc["input_facts"]["format"] == "zstd" and r.doc["missing"]
    # (libguestfs keeps its own socket directory, .guestfs-UID, there)
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(".guestfs-")] == []


def test_verify_a_qcow2_output(conversions: dict[str, Conversion]) -> None:
    c = conversions["vhdx"]
    r = run_cli("verify", c.out, "--initrd", c.out.with_suffix(".initrd"), "--json")
    assert r.code == 0, r.stdout + r.stderr
    assert r.doc["input_facts"]["format"] == "qcow2"
