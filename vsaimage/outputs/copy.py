"""The converted disk starts as a copy of the input, written to its staging
name: sparse (holes and zero blocks are not written) whatever the input's
format. A raw file or block device is copied by Python; every other case
goes through qemu-img, which skips zeros too, never writes its input, reads
every qemu format and an iSCSI LUN with the same iSCSI client (libiscsi) the
appliance uses: no kernel initiator, no root, and 8x faster than copying
through the emulated appliance. A compressed raw image is decompressed
straight into the staging name (raw output) or into a scratch file beside it
(qcow2); an OVA's disk member is taken out into a scratch file (it is
compressed, so small).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from vsaimage import cancel, tools
from vsaimage.errors import WriteError, write_error
from vsaimage.inputs import unpack
from vsaimage.inputs.diskformat import COMPRESSED, qemu_name
from vsaimage.inputs.source import ImageSource, file_size
from vsaimage.outputs.staging import Staging
from vsaimage.progress import Progress

_CHUNK = 8 * 2**20


def stage_input(image: ImageSource, out_format: str, img: Path, label: Path, staging: Staging,
                rep: Progress) -> tuple[str, dict[str, Any]]:
    """Put a copy of the input at the staging name `img`, in `out_format`;
    returns its format and the input's facts."""
    src = image.path
    facts = image.facts()
    if src is not None and image.format == "raw" and out_format == "raw":
        with rep.phase("copy", total=file_size(src), nbytes=True) as ph:
            written = sparse_copy(src, img, label=label, progress=ph.advance)
            ph.detail = f"({written / 2**20:.0f} MiB of data)"
        return "raw", facts
    if src is None:
        source, in_format = image.iscsi_uri, None
    elif image.packed:
        # a raw disk goes straight to the output; a tar's member may not be raw
        straight = (image.format in COMPRESSED or image.tar is not None) and out_format == "raw"
        u = unpack.unpack(image, img if straight else staging.scratch("input"), label=label, rep=rep)
        facts = {**facts, "virtual_size": u.virtual_size, "unpacked_format": u.format}
        if straight and u.format == "raw":
            return "raw", facts
        if straight:
            u = replace(u, path=u.path.rename(staging.scratch("input")))
        source, in_format = str(u.path), u.format
    else:
        source, in_format = str(src), qemu_name(image.format)
    what = "iSCSI" if src is None else f"{in_format} to {out_format}"
    with rep.phase(f"copy ({what})", total=100) as ph:
        qemu_img_convert(source, img, out_format, in_format, label=label,
                         progress=lambda percent: ph.update(percent, 100))
    if image.packed:  # the unpacked scratch is not needed during the edits
        Path(source).unlink()
    return out_format, facts


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of the data regions of a file, skipping holes."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # only a hole up to the end
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end - start
        pos = end


def _is_zero(buf: bytes) -> bool:
    return not buf.strip(b"\0")


def sparse_copy(src: Path, dst: Path, *, label: Path,
                progress: Callable[[int], None] | None = None) -> int:
    """Copy `src` to a new `dst` of the same size writing only its data: holes
    of a sparse file are skipped, and so are all-zero blocks (a block device or
    a file copied without holes). Returns the bytes written."""
    written = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        size = fin.seek(0, os.SEEK_END)
        try:
            fout.truncate(size)
            try:
                extents = list(_data_extents(fin.fileno(), size))
            except OSError:  # no SEEK_DATA (a block device): scan everything
                extents = [(0, size)]
            for start, length in extents:
                fin.seek(start)
                end = start + length
                pos = start
                while pos < end:
                    cancel.check()
                    buf = fin.read(min(_CHUNK, end - pos))
                    if not buf:
                        break
                    if not _is_zero(buf):
                        fout.seek(pos)
                        fout.write(buf)
                        written += len(buf)
                    pos += len(buf)
                    if progress:
                        progress(len(buf))
            fout.flush()
            os.fsync(fout.fileno())
        except OSError as e:
            raise write_error(label, e) from e
    return written


def qemu_img_convert(src: str, dst: Path, out_format: str, in_format: str | None, *, label: Path,
                     progress: Callable[[float], None] | None = None) -> None:
    """Copy `src` (a file in `in_format`, or a URI qemu reads such as
    iscsi://, with `in_format` None) to `dst` in `out_format`, skipping holes
    and zeros; `progress` gets percentages."""
    cmd = [tools.find("qemu-img", "qemu-utils"), "convert", "-p", "-O", out_format, src, str(dst)]
    if in_format is not None:
        cmd[2:2] = ["-f", in_format]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)
    out, errs = proc.stdout, proc.stderr
    assert out is not None and errs is not None
    try:
        # -p prints "    (12.34/100%)" updates ended by carriage returns,
        # which text mode turns into newlines
        pending = ""
        while chunk := out.read(64):
            *done, pending = (pending + chunk).split("\n")
            for m in re.finditer(r"\((\d+(?:\.\d+)?)/100%\)", "".join(done)):
                if progress:
                    progress(float(m.group(1)))
        err = errs.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    if proc.returncode != 0:
        msg = tools.reason(err, "qemu-img", names=[src, str(dst)], default="qemu-img failed")
        if "No space left" in msg:
            raise WriteError(f"{label}: no space left on device while writing",
                             hint="free some space or choose another output directory")
        raise WriteError(f"{label}: qemu-img convert from {src} failed: {msg}")
