"""Input formats, host side (no appliance): detection from content, the
virtual size, streaming decompression into a sparse file, the OVA's OVF, and
every bad input refused with one line and exit 2, nothing left behind and the
input unchanged."""

from __future__ import annotations

import gzip
import lzma
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from fixtures.formats import OVA_DATA_DISK, OVA_VM_NAME, VARIANTS, cached_variant, ovf, write_ova
from support import DebianKernel, fingerprint, run_cli
from vsaimage.errors import ImageError
from vsaimage.inputs import decompress, diskformat
from vsaimage.inputs.ova import read_ova
from vsaimage.inputs.source import parse_image

MiB = 2**20


@pytest.fixture(scope="module")
def variants(example_image: Path) -> dict[str, Path]:
    return {name: cached_variant(example_image, name) for name in VARIANTS}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_format_is_told_from_content(variants: dict[str, Path], name: str, tmp_path: Path) -> None:
    """Detected from the bytes: the same file under a misleading name too."""
    path = variants[name]
    assert diskformat.detect(path) == VARIANTS[name].format
    if name != "vmdk-flat":  # a descriptor names its extent relative to itself
        misnamed = tmp_path / "disk.img"
        misnamed.symlink_to(path)
        assert diskformat.detect(misnamed) == VARIANTS[name].format


@pytest.mark.parametrize("name", ["vmdk-sparse", "vmdk-flat", "vmdk-split", "vmdk-stream",
                                  "vhd", "vhdx", "qcow2"])
def test_virtual_size_is_the_raw_size(variants: dict[str, Path], example_image: Path, name: str) -> None:
    src = parse_image(str(variants[name]))
    assert (src.format, src.virtual_size) == (VARIANTS[name].format, example_image.stat().st_size)
    assert src.drive(readonly=True).format == diskformat.qemu_name(VARIANTS[name].format)


def test_fixed_vhd_is_told_by_its_footer(tmp_path: Path) -> None:
    """A fixed VHD is raw data (an MBR first) with a footer at the end."""
    p = tmp_path / "fixed.img"
    with open(p, "wb") as f:
        f.truncate(4 * MiB)
        f.seek(510)
        f.write(b"\x55\xaa")
        f.seek(4 * MiB)
        f.write(b"conectix".ljust(512, b"\0"))
    assert diskformat.detect(p) == "vhd"
    p.write_bytes(b"\0" * 510 + b"\x55\xaa" + bytes(4096))
    assert diskformat.detect(p) == "raw"


def test_input_format_overrides_detection(variants: dict[str, Path]) -> None:
    with pytest.raises(ImageError, match="qemu-img cannot read it as qcow2"):
        parse_image(str(variants["vhdx"]), input_format="qcow2")


# --- decompression -------------------------------------------------------------


def _raw(path: Path) -> bytes:
    """A small raw disk: an MBR, some data, long runs of zeros, and data
    ending in the last, partial block."""
    data = bytearray(9 * MiB + 1000)
    data[510:512] = b"\x55\xaa"
    data[3 * MiB:3 * MiB + 5000] = b"x" * 5000
    data[-700:] = b"tail" * 175
    path.write_bytes(bytes(data))
    return bytes(data)


@pytest.mark.parametrize("fmt", diskformat.COMPRESSED)
def test_decompress_is_exact_and_sparse(tmp_path: Path, fmt: str) -> None:
    raw = tmp_path / "raw.img"
    data = _raw(raw)
    packed = tmp_path / "packed"
    tool = {"gzip": ["gzip"], "xz": ["xz"], "zstd": ["zstd", "-q"]}[fmt]
    with open(raw, "rb") as fin, open(packed, "wb") as fout:
        subprocess.run([*tool, "-c"], stdin=fin, stdout=fout, check=True)
    assert diskformat.detect(packed) == fmt
    out = tmp_path / "out.img"
    link = tmp_path / "link"  # zstd ignores a file named by a symbolic link
    link.symlink_to(packed)
    size, written = decompress.decompress(link, fmt, out, label=out)
    assert (size, out.read_bytes()) == (len(data), data)
    # the MBR's block, 5000 bytes over two blocks, the last (partial) block
    assert written == 4096 + 2 * 4096 + 1000
    assert out.stat().st_blocks * 512 <= 8 * 4096


def test_truncated_gzip_is_an_image_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw.img"
    packed = tmp_path / "vsa.img.gz"
    packed.write_bytes(gzip.compress(_raw(raw))[:-20])
    with pytest.raises(ImageError, match=r"vsa.img.gz: cannot decompress it \(gzip\): unexpected end of"):
        decompress.decompress(packed, "gzip", tmp_path / "out", label=tmp_path / "out")


# --- OVA ---------------------------------------------------------------------------


def test_ova_reports_vm_and_disks_in_hardware_order(variants: dict[str, Path], example_image: Path) -> None:
    o = read_ova(variants["ova"])
    assert (o.vm_name, o.descriptor, o.chosen) == (OVA_VM_NAME, "vsa.ovf", 1)
    assert [d.file for d in o.disks] == ["vsa-disk1.vmdk", OVA_DATA_DISK]
    assert [d.capacity for d in o.disks] == [example_image.stat().st_size, 64 * MiB]
    assert read_ova(variants["ova"], 2).system_disk.file == OVA_DATA_DISK


# --- bad inputs, through the CLI ---------------------------------------------


def _refused(tmp_path: Path, image: Path, *extra: str | Path, match: str, command: str = "inspect") -> None:
    """exit 2, one line naming the file, no traceback, nothing left beside
    the output or in TMPDIR, the input unchanged."""
    before = fingerprint(image)
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    args: tuple[str | Path, ...] = (command, image, *extra)
    if command == "convert":
        args += ("-o", out / "x.img", "--skip", "modules")
    r = run_cli(*args, env={"TMPDIR": str(tmp)}, timeout=300)
    assert r.code == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and str(image) in errors[0] and match in errors[0], r.stderr
    assert "Traceback" not in r.stderr
    assert list(tmp.iterdir()) == [] and list(out.iterdir()) == []
    assert fingerprint(image) == before


def test_vmdk_descriptor_without_its_extent(variants: dict[str, Path], tmp_path: Path) -> None:
    desc = tmp_path / "vsa.vmdk"
    shutil.copyfile(variants["vmdk-flat"], desc)
    _refused(tmp_path, desc, match="No such file or directory")


def test_truncated_sparse_vmdk(variants: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "vsa.vmdk"
    with open(variants["vmdk-sparse"], "rb") as f:
        bad.write_bytes(f.read(10 * MiB))
    _refused(tmp_path, bad, match="points after EOF")


def test_tar_without_ovf_is_a_tar_of_a_disk(variants: dict[str, Path], tmp_path: Path) -> None:
    """Told by content, not by name: a tar with no OVF descriptor is an
    archive holding a disk image, not a broken OVA."""
    odd = tmp_path / "vsa.ova"
    with tarfile.open(odd, "w") as tar:
        tar.add(variants["vmdk-stream"], arcname="vsa-disk1.vmdk")
    src = parse_image(str(odd))
    assert src.format == "tar" and src.tar is not None and src.tar.chosen.name == "vsa-disk1.vmdk"


def test_ova_whose_ovf_names_a_missing_disk(variants: dict[str, Path], tmp_path: Path,
                                            example_image: Path) -> None:
    bad = tmp_path / "vsa.ova"
    text = ovf(system="vsa-disk1.vmdk", data="gone.vmdk", capacity=example_image.stat().st_size)
    write_ova(bad, text, {"vsa-disk1.vmdk": variants["vmdk-stream"]})
    _refused(tmp_path, bad, match="names disk file 'gone.vmdk', which is not in the archive")


def test_disk_out_of_range_and_not_an_ova(variants: dict[str, Path], tmp_path: Path) -> None:
    _refused(tmp_path, variants["ova"], "--disk", "3", match="--disk 3: the VM has 2 disk(s)")
    with pytest.raises(ImageError, match="--disk chooses a disk of an OVA or a tar archive, and this is"):
        parse_image(str(variants["qcow2"]), disk="1")
    with pytest.raises(ImageError, match="an iSCSI LUN is read as a raw disk"):
        parse_image("iscsi://h/iqn.2003-10.com.lefthandnetworks:vsa/0", input_format="vmdk")


@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_truncated_gz(tmp_path: Path, command: str, example_image: Path,
                      debian_kernel: DebianKernel) -> None:
    """Refused once decompression reaches the cut: the temporary copy of
    inspect, or the staged output of convert, removed."""
    bad = tmp_path / "vsa.img.gz"
    with open(example_image, "rb") as f:
        head = f.read(64 * MiB)
    bad.write_bytes(gzip.compress(head, compresslevel=1)[:-1000])
    kernel = ("--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd)
    _refused(tmp_path, bad, *(kernel if command == "convert" else ()),
             match="cannot decompress it (gzip)", command=command)


def test_xz_stream_of_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "vsa.img.xz"
    bad.write_bytes(lzma.compress(b"x" * 100)[:12] + b"garbage" * 10)
    _refused(tmp_path, bad, match="cannot decompress it (xz)")


def test_compressed_non_disk_is_named_as_the_users_file(tmp_path: Path) -> None:
    """A gzipped file that is no disk (an initrd, say): the error names the
    file given, not the temporary copy."""
    bad = tmp_path / "initrd.img"
    bad.write_bytes(gzip.compress(b"070701" + bytes(4096)))
    _refused(tmp_path, bad, match="(decompressed): no partition table")
