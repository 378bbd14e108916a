"""Every input format converted as a user types it (`--modules minimal`), in
two appliance launches: one batch of the raw image and every packed format
to raw outputs, and the vhdx input alone to a qcow2 output. Each output is
read back with the raw input's conversion in ONE separate read-only launch:
the root and boot filesystems must hold the same files with the same
contents, modes and owners. Then inspect on an OVA and verify on a packed
input and on a qcow2 output.

A batch names each image's outputs after its input, and every format
variant is a `vsa.*` in a directory of its own: the batch reads them
through symlinks named after the variant (a VMDK's extents linked beside
its descriptor, where qemu looks for them)."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.formats import OVA_DATA_DISK, OVA_VM_NAME, VARIANTS, cached_variant
from support import DebianKernel, Run, data_extents, nobody_dir, run_cli
from vsaimage.cli.render import Screen, show_inspect

pytestmark = pytest.mark.integration

# name -> output format; the vhdx input also checks a qcow2 output
CONVERTS = {"raw": "raw", **{name: "raw" for name in VARIANTS}, "vhdx": "qcow2"}


@dataclass(frozen=True)
class Conversion:
    input: Path
    before: dict[Path, str]  # fingerprint of every file of the input
    out: Path
    format: str
    run: Run  # the convert it was part of
    doc: dict[str, Any]  # its own document in that convert's


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


def _linked(src: Path, name: str, into: Path) -> Path:
    """`src` as `into/NAME.EXT` (its extension kept: `vsa.img.gz` ->
    `NAME.img.gz`), every other file beside it linked by its own name."""
    for f in src.parent.iterdir():
        if f != src:
            (into / f.name).symlink_to(f)
    link = into / (name + src.name.removeprefix(src.name.split(".", 1)[0]))
    link.symlink_to(src)
    return link


@pytest.fixture(scope="module")
def conversions(example_image: Path, debian_kernel: DebianKernel) -> dict[str, Conversion]:
    top = nobody_dir() / "formats"
    inputs: dict[str, tuple[Path, Path]] = {}  # name -> (the variant's file, the link the batch reads)
    for name in CONVERTS:
        src = example_image if name == "raw" else cached_variant(example_image, name)
        into = top / "in" / ("qcow2-out" if CONVERTS[name] == "qcow2" else "raw-out")
        into.mkdir(parents=True, exist_ok=True)
        if name == "raw":  # beside it in the cache are the other layouts' images
            link = into / "raw.img"
            link.symlink_to(src)
        else:
            link = _linked(src, name, into)
        inputs[name] = (src, link)
    before = {name: _fingerprints(src, alone=name == "raw") for name, (src, _) in inputs.items()}
    done = {}
    for fmt in ("raw", "qcow2"):
        names = [n for n in CONVERTS if CONVERTS[n] == fmt]
        out = top / f"{fmt}-out"
        out.mkdir()
        r = run_cli("convert", *(inputs[n][1] for n in names), "--kernel", debian_kernel.vmlinuz,
                    "--initrd", debian_kernel.initrd, "-o", out / "vsa-xen.img" if len(names) == 1 else out,
                    "--modules", "minimal", "--format", fmt, "--json")
        docs = r.doc["images"] if len(names) > 1 else [r.doc]
        for n, doc in zip(names, docs, strict=True):
            img = out / ("vsa-xen.img" if len(names) == 1 else f"{n}.img")
            done[n] = Conversion(inputs[n][0], before[n], img, fmt, r, doc)
    return done


@pytest.mark.parametrize("name", sorted(CONVERTS))
def test_each_format_converts(conversions: dict[str, Conversion], name: str) -> None:
    c = conversions[name]
    doc = c.doc
    assert doc["success"], doc.get("error") or c.run.stderr
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

    converted = {n: c for n, c in conversions.items() if c.doc["success"]}
    assert "raw" in converted
    g = guestfs.GuestFS(python_return_dict=True)
    for c in converted.values():
        g.add_drive_opts(str(c.out), readonly=True, format=c.format)
    g.launch()
    listings: dict[str, dict[str, dict[str, tuple[object, ...]]]] = {}
    try:
        for dev, (name, c) in zip(g.list_devices(), converted.items(), strict=True):
            doc = c.doc
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
    # the human lines are drawn from this document (the CLI's human path: test_inspect's stock inspect)
    out = io.StringIO()
    show_inspect(Screen(out), r.doc)
    assert "OVA disks" in out.getvalue()


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
