"""Output files: checked before any work, written under temporary names beside
the final ones, renamed into place only when everything succeeded, removed on
any failure (Ctrl-C included).

A temporary is named `.NAME.<pid>.partial`; a process killed with SIGKILL can
leave one behind, and the next run over the same output removes the ones
whose process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vsaimage import cancel
from vsaimage.errors import OutputError, WriteError, write_error

_CHUNK = 8 * 2**20


@dataclass(frozen=True)
class OutputPaths:
    image: Path
    initrd: Path
    cfg: Path

    @classmethod
    def from_option(cls, out: Path) -> OutputPaths:
        stem = out.with_suffix("") if out.suffix == ".img" else out
        return cls(out, stem.with_name(stem.name + ".initrd"), stem.with_name(stem.name + ".cfg"))

    @classmethod
    def in_directory(cls, directory: Path, name: str) -> OutputPaths:
        """NAME.img, NAME.initrd and NAME.cfg in `directory` (several images
        converted at once: each named after its input)."""
        return cls.from_option(directory / f"{name}.img")

    def all(self) -> tuple[Path, ...]:
        return (self.image, self.initrd, self.cfg)


def check_destination(paths: Sequence[Path], *, force: bool, inputs: Sequence[Path]) -> None:
    """Refuse outputs that would clobber an input, exist without --force, or
    live in a directory that is missing or not writable."""
    for p in paths:
        parent = p.parent
        if not parent.is_dir():
            raise OutputError(f"{p}: output directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"{p}: output directory {parent} is not writable")
        for i in inputs:
            with contextlib.suppress(OSError):
                if p.resolve() == i.resolve() or (p.exists() and os.path.samefile(p, i)):
                    raise OutputError(f"{p}: output is the same file as input {i}")
        if p.is_dir():
            raise OutputError(f"{p}: output is a directory")
        if p.exists() and not force:
            raise OutputError(f"{p} already exists", hint="use --force to overwrite it")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(final: Path) -> list[Path]:
    """Remove temporaries of `final` (`.NAME.<pid>.partial`, and scratch files
    `.NAME.<pid>.<what>.partial`) left by processes that no longer exist."""
    removed = []
    for p in final.parent.glob(f".{final.name}.*.partial"):
        pid = p.name[len(final.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)) and int(pid) != os.getpid():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


class Staging:
    """Temporaries for a set of final paths, the main one first (scratch
    files are named after it, and it is renamed into place last). Use as a
    context manager and call commit() at the end of the work; leaving
    without commit removes them."""

    def __init__(self, finals: Sequence[Path]) -> None:
        self.finals = list(finals)
        self.temps = {f: f.with_name(f".{f.name}.{os.getpid()}.partial") for f in finals}
        self.committed = False
        self.scratches: list[Path] = []

    def __enter__(self) -> Staging:
        for f in self.finals:
            clean_stale(f)
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.scratches:
            with contextlib.suppress(FileNotFoundError):
                s.unlink()
        if not self.committed:
            self.discard()

    def temp(self, final: Path) -> Path:
        return self.temps[final]

    def scratch(self, what: str) -> Path:
        """A work file beside the first output, removed at the end whatever
        happens (and, after a SIGKILL, by the next run's clean-up)."""
        final = self.finals[0]
        path = final.with_name(f".{final.name}.{os.getpid()}.{what}.partial")
        self.scratches.append(path)
        return path

    def discard(self) -> None:
        for t in self.temps.values():
            with contextlib.suppress(FileNotFoundError):
                t.unlink()

    def commit(self) -> None:
        """Rename every temporary into place, the first final (the disk of a
        convert) last: a crash between two renames leaves no final disk
        without its initrd and config."""
        for f in [*self.finals[1:], *self.finals[:1]]:
            t = self.temps[f]
            if t.exists():
                os.replace(t, f)
        self.committed = True


def write_bytes(path: Path, data: bytes, *, label: Path) -> None:
    try:
        path.write_bytes(data)
    except OSError as e:
        raise write_error(label, e) from e


@contextlib.contextmanager
def open_output(path: Path, *, label: Path) -> Iterator[BinaryIO]:
    """`path` open for writing, for output written as it is made; a failed
    write is the one-line error for `label`."""
    try:
        with path.open("wb") as f:
            yield f
    except OSError as e:
        raise write_error(label, e) from e


def ensure_space(directory: Path, needed: int, *, label: Path) -> None:
    """Refuse to go on when `directory` has less than `needed` bytes free.
    Checked before the appliance writes into the staged image: on a full disk
    qemu pauses the guest (its ENOSPC policy) and the write never returns."""
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    if free < needed:
        raise WriteError(f"{label}: no space left on device for the output: about "
                         f"{needed / 2**20:.0f} MiB more needed, {free / 2**20:.0f} MiB free",
                         hint="free some space, choose another output directory or use --modules minimal")


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


def source_size(src: Path) -> int:
    with open(src, "rb") as f:
        return f.seek(0, os.SEEK_END)


def allocated_bytes(src: Path) -> int:
    st = src.stat()
    if stat.S_ISBLK(st.st_mode):
        return source_size(src)
    return st.st_blocks * 512


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
    cmd = ["qemu-img", "convert", "-p", "-O", out_format, src, str(dst)]
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
        msg = (err.strip().splitlines() or ["qemu-img failed"])[-1]
        if "No space left" in msg:
            raise WriteError(f"{label}: no space left on device while writing",
                             hint="free some space or choose another output directory")
        raise WriteError(f"{label}: qemu-img convert from {src} failed: {msg}")
