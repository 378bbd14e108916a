"""Output safety on the host side: sparse copy, staging and clean-up, checks of
the destination. No appliance needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vsaimage.errors import OutputError
from vsaimage.outputs.copy import sparse_copy
from vsaimage.outputs.staging import OutputPaths, Staging, check_destination, clean_stale


def test_sparse_copy_writes_only_data(tmp_path: Path) -> None:
    src = tmp_path / "big.img"
    with open(src, "wb") as f:
        f.truncate(6 * 2**30)
        for off in (0, 2**30, 5 * 2**30 + 123):
            f.seek(off)
            f.write(os.urandom(3 * 2**20))
        f.seek(3 * 2**30)
        f.write(bytes(8 * 2**20))  # allocated zeros: need not be written either
    dst = tmp_path / "copy.img"
    written = sparse_copy(src, dst, label=dst)
    assert dst.stat().st_size == src.stat().st_size
    assert written <= 9 * 2**20 + 2 * 8 * 2**20  # data, rounded to read chunks
    assert dst.stat().st_blocks * 512 < 64 * 2**20
    # Same bytes where the source has data, and no data anywhere else.
    with open(src, "rb") as a, open(dst, "rb") as b:
        for off in (0, 2**30, 5 * 2**30 + 123):
            a.seek(off)
            b.seek(off)
            assert a.read(3 * 2**20) == b.read(3 * 2**20)
        fd = b.fileno()
        assert os.lseek(fd, 3 * 2**20 + 2**20, os.SEEK_DATA) >= 2**30


def test_output_names() -> None:
    p = OutputPaths.from_option(Path("/x/vsa-xen.img"))
    assert p.initrd == Path("/x/vsa-xen.initrd") and p.cfg == Path("/x/vsa-xen.cfg")
    q = OutputPaths.from_option(Path("/x/guest"))
    assert q.image == Path("/x/guest") and q.cfg == Path("/x/guest.cfg")


def test_destination_checks(tmp_path: Path) -> None:
    src = tmp_path / "in.img"
    src.write_bytes(b"x")
    with pytest.raises(OutputError, match="does not exist"):
        check_destination([tmp_path / "nope" / "out.img"], force=False, inputs=[src])
    with pytest.raises(OutputError, match="same file as input"):
        check_destination([src], force=True, inputs=[src])
    existing = tmp_path / "out.img"
    existing.write_bytes(b"y")
    with pytest.raises(OutputError, match="already exists") as e:
        check_destination([existing], force=False, inputs=[src])
    assert e.value.hint and "--force" in e.value.hint
    check_destination([existing], force=True, inputs=[src])


def test_staging_removes_temporaries_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "out.img"
    with pytest.raises(KeyboardInterrupt), Staging([final]) as st:
        st.temp(final).write_bytes(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_staging_commit_renames(tmp_path: Path) -> None:
    final = tmp_path / "out.img"
    with Staging([final]) as st:
        st.temp(final).write_bytes(b"done")
        st.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["out.img"]


# Commits the three outputs of a convert, and is killed right after the
# first rename: a crash between two renames.
_KILLED_AFTER_FIRST_RENAME = """
import os, signal, sys
from pathlib import Path
from vsaimage.outputs.staging import OutputPaths, Staging

paths = OutputPaths.from_option(Path(sys.argv[1]))
renamed = os.replace

def rename_then_die(src, dst):
    renamed(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)

with Staging(paths.all()) as staging:
    for final in paths.all():
        staging.temp(final).write_text(final.name)
    os.replace = rename_then_die
    staging.commit()
"""


def test_a_crash_between_renames_leaves_no_image_without_its_initrd_and_config(tmp_path: Path) -> None:
    paths = OutputPaths.from_option(tmp_path / "vsa-xen.img")
    run = subprocess.run([sys.executable, "-c", _KILLED_AFTER_FIRST_RENAME, str(paths.image)],
                         capture_output=True, text=True)
    assert run.returncode == -signal.SIGKILL, run.stderr
    renamed = [p.name for p in paths.all() if p.exists()]
    assert len(renamed) == 1, renamed  # killed between the first rename and the second
    assert not paths.image.exists(), "the disk was renamed into place before its initrd and config"


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    final = tmp_path / "out.img"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".out.img.{dead.pid}.partial"
    alive = tmp_path / f".out.img.{os.getppid()}.partial"
    stale.write_bytes(b"old")
    alive.write_bytes(b"someone else's")
    assert clean_stale(final) == [stale]
    assert alive.exists()
