"""A raw image compressed with gzip, xz or zstd (the wiki's `vsa.img.gz`),
decompressed as a stream straight into a sparse file: all-zero blocks are
seeked over, so a 6 GiB disk holding 5 MiB of data takes about 5 MiB, and no
copy of the compressed or the whole decompressed image is made on the way.
The system's own `gzip`/`xz`/`zstd` do the decompressing (in C, on the other
core, while this process writes)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from vsaimage import cancel, tools
from vsaimage.errors import ImageError, write_error

# format -> (program, the Debian package that has it)
_TOOLS = {"gzip": ("gzip", "gzip"), "xz": ("xz", "xz-utils"), "zstd": ("zstd", "zstd")}
_CHUNK = 4 * 2**20
# How gzip, xz and zstd name their standard input in a message.
_STDIN = ("stdin", "(stdin)", "/*stdin*\\", "/*stdin*\\ ")
# Holes are made per filesystem block, as the raw fixture and `cp --sparse`
# have them; a chunk of zeros only (most of an image) is skipped whole.
_BLOCK = 4096
_ZERO_BLOCK = bytes(_BLOCK)
_ZERO_CHUNK = bytes(_CHUNK)


def decompress(src: Path, fmt: str, dst: Path, *, label: Path,
               progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """Decompress `src` into a new sparse `dst`; returns (size, bytes
    written). A truncated or corrupt stream is an ImageError naming `src`."""
    program, package = _TOOLS[fmt]
    # The stream goes in on stdin: zstd ignores a file named through a
    # symbolic link (a warning, and nothing written).
    try:
        stream = open(src, "rb")  # noqa: SIM115 (the with below closes it)
    except OSError as e:
        raise ImageError(f"{src}: cannot read it: {e.strerror}") from e
    with stream:
        proc = subprocess.Popen([tools.find(program, package), "-dc"], stdin=stream,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    pos = written = 0
    try:
        with open(dst, "wb") as out:
            # a buffered read(n) returns n bytes unless the stream ends
            while chunk := proc.stdout.read(_CHUNK):
                cancel.check()
                n = len(chunk)
                if chunk != _ZERO_CHUNK[:n]:
                    for start, end in data_runs(chunk):
                        out.seek(pos + start)
                        out.write(chunk[start:end])
                        written += end - start
                pos += n
                if progress:
                    progress(n)
            try:
                out.truncate(pos)
                out.flush()
                os.fsync(out.fileno())
            except OSError as e:
                raise write_error(label, e) from e
        err = proc.stderr.read().decode(errors="replace")
    except OSError as e:
        raise write_error(label, e) from e
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if proc.returncode != 0:
        why = tools.reason(err, program, names=_STDIN, default=f"{fmt} exited with {proc.returncode}")
        raise ImageError(f"{src}: cannot decompress it ({fmt}): {why}",
                         hint="is the file complete? Compare its size or checksum with the original's")
    return pos, written



def data_runs(chunk: bytes) -> list[tuple[int, int]]:
    """(start, end) of the runs of blocks of `chunk` that are not all zeros,
    each written with one call."""
    runs: list[tuple[int, int]] = []
    view = memoryview(chunk)
    for off in range(0, len(chunk), _BLOCK):
        if view[off:off + _BLOCK] == _ZERO_BLOCK[:len(view[off:off + _BLOCK])]:
            continue
        end = min(off + _BLOCK, len(chunk))
        if runs and runs[-1][1] == off:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((off, end))
    return runs
