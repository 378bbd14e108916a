"""The initrd repack streams: its peak memory does not grow with the size of
the files in the initrd. Measured in a subprocess (its own peak RSS), on
synthetic initrds that differ only in how much file data they hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import initrd_reader as rd
from support import REPO

MIB = 1 << 20
ORDER = b'/scripts/init-bottom/udev "$@"\n[ -e /conf/param.conf ] && . /conf/param.conf\n'
# The process's own peak: VmHWM, not getrusage's ru_maxrss, which Linux
# carries over from the parent at exec (a pytest worker grown to 486 MiB
# made both repacks "peak" at 486 MiB, and the comparison pass unseen).
REPACK = """
import re, sys
from vsaimage.initrd import repack as initrd
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as out:
    result = initrd.repack(src, out)
with open("/proc/self/status") as status:
    print(result.entries, int(re.search(r"^VmHWM:\\s+(\\d+) kB", status.read(), re.M)[1]) * 1024)
"""


def _initrd(path: Path, files: int) -> None:
    """A zstd initrd holding `files` files of 1 MiB each, besides what
    pcihack needs; packed piece by piece, never whole in memory."""
    m = rd.member
    head = [m(".", 0o040755, ino=1), m("scripts", 0o040755, ino=2),
            m("scripts/init-bottom", 0o040755, ino=3),
            m("scripts/init-bottom/ORDER", 0o100644, ORDER, ino=4), m("data", 0o040755, ino=5)]
    with path.open("wb") as out, subprocess.Popen(["zstd", "-q", "-1", "-c"], stdin=subprocess.PIPE,
                                                  stdout=out) as zstd:
        assert zstd.stdin is not None
        zstd.stdin.write(rd.write_newc(head, trailer=False))
        for i in range(files):
            data = bytes([i % 251]) * MIB
            zstd.stdin.write(rd.write_newc([m(f"data/{i}", 0o100644, data, ino=10 + i)], trailer=False))
        zstd.stdin.write(rd.write_newc([]))
        zstd.stdin.close()
    assert zstd.returncode == 0


def _peak(tmp_path: Path, files: int) -> int:
    src, out = tmp_path / f"in-{files}", tmp_path / f"out-{files}"
    _initrd(src, files)
    run = subprocess.run([sys.executable, "-c", REPACK, str(src), str(out)], cwd=REPO,
                         capture_output=True, text=True, check=True)
    entries, peak = map(int, run.stdout.split())
    assert entries == files + 6  # the script added
    return peak


def test_memory_does_not_grow_with_the_initrd(tmp_path: Path) -> None:
    small, big = _peak(tmp_path, 128), _peak(tmp_path, 384)
    # 256 MiB more file data; holding it (or its compressed copy) would show.
    assert big - small < 16 * MIB, f"peak RSS {small / MIB:.0f} MiB -> {big / MIB:.0f} MiB"
    # The process peaked at 38 MiB with zstd in one thread, 126 MiB with one
    # compression worker, whose job buffers were most of it.
    assert big < 64 * MIB, f"peak RSS {big / MIB:.0f} MiB"
