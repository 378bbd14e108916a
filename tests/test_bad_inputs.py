"""A corpus of broken inputs, generated here: every one must end in exit 1 or
2 with exactly one line on stderr (`vsaimage: error: ...`), no traceback, and
nothing under the output names.

Initrd and kernel cases fail before any appliance launch and are cheap; the
disk image cases need one launch each (~30 s under TCG), so there are few of
them, each breaking one thing."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.build_image import LAYOUTS
from support import DebianKernel, Run, run_cli

MiB = 2**20


def assert_one_line_error(r: Run) -> str:
    assert r.code in (1, 2), f"exit {r.code}\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vsaimage: error:"), r.stderr
    return lines[0]


def assert_nothing_written(out_dir: Path) -> None:
    assert sorted(p.name for p in out_dir.iterdir()) == []


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


# --- initrd (vsaimage initrd: no appliance) ---------------------------------

@pytest.fixture(scope="module")
def initrd_bytes(debian_kernel: DebianKernel) -> bytes:
    return debian_kernel.initrd.read_bytes()


@pytest.mark.parametrize("tenths", range(10))
def test_truncated_initrd(initrd_bytes: bytes, tmp_path: Path, out_dir: Path, tenths: int) -> None:
    src = tmp_path / "initrd.img"
    src.write_bytes(initrd_bytes[: len(initrd_bytes) * tenths // 10])
    r = run_cli("initrd", src, "-o", out_dir / "x.initrd", "-q")
    assert_one_line_error(r)
    assert_nothing_written(out_dir)


@pytest.mark.parametrize("magic", [b"\x1f\x8b\x08\x00", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ\x00"],
                         ids=["gzip", "zstd", "xz"])
def test_random_bytes_behind_a_compression_header(tmp_path: Path, out_dir: Path, magic: bytes) -> None:
    src = tmp_path / "initrd.img"
    src.write_bytes(magic + random.Random(magic).randbytes(256 * 1024))
    r = run_cli("initrd", src, "-o", out_dir / "x.initrd", "-q")
    assert_one_line_error(r)
    assert_nothing_written(out_dir)


# --- kernel (refused before the launch) -------------------------------------

@pytest.mark.parametrize("kind", ["zeros", "header-only"])
def test_bad_kernel_fails_before_launch(example_image: Path, debian_kernel: DebianKernel,
                                        tmp_path: Path, out_dir: Path, kind: str) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    if kind == "zeros":
        vmlinuz.write_bytes(bytes(1024 * 1024))
    else:  # a real header whose version string pointer leads past the end
        vmlinuz.write_bytes(debian_kernel.vmlinuz.read_bytes()[:0x300])
    start = time.monotonic()
    r = run_cli("convert", example_image, "--kernel", vmlinuz, "--initrd", debian_kernel.initrd,
                "-o", out_dir / "vsa-xen.img", "-q", timeout=60)
    assert_one_line_error(r)
    assert r.code == 2
    assert time.monotonic() - start < 20, "a bad kernel must be refused before the appliance starts"
    assert_nothing_written(out_dir)


# --- disk images (one appliance launch each) --------------------------------

STOCK = LAYOUTS["stock"]


def _truncated(img: Path) -> None:
    # The MBR and the first primary partitions survive; the extended
    # partition's chain and the root (a logical partition) are cut off.
    os.truncate(img, STOCK.root.start - 400 * MiB)


def _corrupt_table(img: Path) -> None:
    # Garbage in the four primary entries, boot signature intact.
    with open(img, "r+b") as f:
        f.seek(446)
        f.write(random.Random(7).randbytes(64))


def _damaged_root_superblock(img: Path) -> None:
    with open(img, "r+b") as f:
        f.seek(STOCK.root.start + 1024)
        f.write(bytes(1024))




@pytest.mark.integration
@pytest.mark.parametrize("damage", [
    pytest.param(_truncated, id="truncated-before-root"),
    pytest.param(_corrupt_table, id="corrupt-partition-table"),
    pytest.param(_damaged_root_superblock, id="root-superblock-zeroed"),
])
def test_bad_image(example_image: Path, debian_kernel: DebianKernel, tmp_path: Path, out_dir: Path,
                   damage: Callable[[Path], None]) -> None:
    img = tmp_path / "vsa.img"
    subprocess.run(["cp", "--sparse=always", str(example_image), str(img)], check=True)
    damage(img)
    r = run_cli("convert", img, "--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd,
                "-o", out_dir / "vsa-xen.img", "--modules", "minimal", "-q", timeout=600)
    assert_one_line_error(r)
    assert_nothing_written(out_dir)


@pytest.mark.integration
def test_bad_initrd_in_convert_leaves_nothing(example_image: Path, debian_kernel: DebianKernel,
                                               initrd_bytes: bytes, tmp_path: Path,
                                               out_dir: Path) -> None:
    """The initrd is repacked while the appliance works on the image: its
    failure must still remove the staged image."""
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(initrd_bytes[: len(initrd_bytes) // 2])
    r = run_cli("convert", example_image, "--kernel", debian_kernel.vmlinuz, "--initrd", initrd,
                "-o", out_dir / "vsa-xen.img", "--skip", "modules", "-q", timeout=600)
    assert_one_line_error(r)
    assert r.code == 2
    assert_nothing_written(out_dir)
