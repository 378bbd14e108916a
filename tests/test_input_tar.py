"""A disk image inside a tar archive (LeftHand OS 12's `.img.tgz`), host
side: told from content whatever the compression, the member chosen (by
--disk NAME or N when there are several), written sparse: a GNU sparse
entry's holes are never read, and the output takes about its data."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support import run_cli
from vsaimage.errors import ImageError
from vsaimage.inputs import tarball
from vsaimage.inputs.source import parse_image

MiB = 2**20
GiB = 2**30
SIZE = 32 * GiB  # the KVM download's disk


def sparse_disk(path: Path) -> None:
    """A 32 GiB sparse raw disk: an MBR, data at 1 GiB and in the last block."""
    with open(path, "wb") as f:
        f.truncate(SIZE)
        f.write(b"\0" * 510 + b"\x55\xaa")
        f.seek(GiB)
        f.write(b"data" * 2048)
        f.seek(SIZE - 4096)
        f.write(b"tail" * 1024)


COMPRESS = {"tar": [], "tgz": ["-z"], "tar.xz": ["-J"], "tar.zst": ["--zstd"]}


def pack(tmp_path: Path, suffix: str, *names: str) -> Path:
    out = tmp_path / f"vsa.{suffix}"
    for name in names:
        sparse_disk(tmp_path / name)
    subprocess.run(["tar", "-S", *COMPRESS[suffix], "-cf", str(out), "-C", str(tmp_path), *names], check=True)
    return out


def read(path: Path, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(n)


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_member_is_exact_and_sparse(tmp_path: Path, suffix: str) -> None:
    archive = pack(tmp_path, suffix, "KVM-VSA-12.7.00.0226_01.img")
    assert archive.stat().st_size < 4 * MiB  # GNU sparse: the holes are not in the archive
    src = parse_image(str(archive))
    assert src.format == "tar" and src.tar is not None and src.packed
    assert src.tar.chosen == tarball.Member("KVM-VSA-12.7.00.0226_01.img", SIZE)
    assert src.facts()["tar"]["compression"] == {"tar": [], "tgz": ["gzip"], "tar.xz": ["xz"],
                                                 "tar.zst": ["zstd"]}[suffix]
    out = tmp_path / "out.img"
    seen: list[int] = []
    written = tarball.extract(src.tar, out, label=out, progress=seen.append)
    assert out.stat().st_size == SIZE
    assert written == 4096 + 8192 + 4096 and sum(seen) < 4 * MiB  # holes never read
    assert out.stat().st_blocks * 512 <= 64 * 1024
    assert read(out, 510, 2) == b"\x55\xaa" and read(out, GiB, 8192) == b"data" * 2048
    assert read(out, SIZE - 4096, 4096) == b"tail" * 1024 and read(out, 2 * GiB, 4096) == bytes(4096)


def test_several_disks_need_disk_name(tmp_path: Path) -> None:
    archive = pack(tmp_path, "tgz", "a.img", "b.img")
    with pytest.raises(ImageError, match=r"holds 2 disk images \(a.img, b.img\)"):
        parse_image(str(archive))
    assert parse_image(str(archive), disk="b.img").tar.chosen.name == "b.img"  # type: ignore[union-attr]
    assert parse_image(str(archive), disk="2").tar.chosen.name == "b.img"  # type: ignore[union-attr]
    with pytest.raises(ImageError, match=r"--disk c.img: no such disk image in the archive \(it holds a.img"):
        parse_image(str(archive), disk="c.img")


def test_refused_on_the_command_line(tmp_path: Path) -> None:
    archive = pack(tmp_path, "tgz", "a.img", "b.img")
    r = run_cli("inspect", archive)
    assert r.code == 2 and "Traceback" not in r.stderr
    assert "holds 2 disk images (a.img, b.img)" in r.stderr and "--disk NAME" in r.stderr


def test_gzip_of_a_raw_disk_is_not_a_tar(tmp_path: Path) -> None:
    raw = tmp_path / "vsa.img"
    with open(raw, "wb") as f:
        f.truncate(8 * MiB)
        f.write(b"\0" * 510 + b"\x55\xaa")
    subprocess.run(["gzip", "-k", str(raw)], check=True)
    assert parse_image(str(raw) + ".gz").format == "gzip"
