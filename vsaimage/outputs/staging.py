"""Output files: checked before any work, written under temporary names beside
the final ones, renamed into place only when everything succeeded, removed on
any failure (Ctrl-C included).

A temporary is named `.NAME.<pid>.partial`; a process killed with SIGKILL can
leave one behind, and the next run over the same output removes the ones
whose process is gone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vsaimage.errors import OutputError, WriteError, write_error


@dataclass(frozen=True)
class OutputPaths:
    image: Path
    initrd: Path
    cfg: Path
    disks: tuple[Path, ...] = ()  # the VM's other system disks: OUT-2.img, OUT-3.img, ...

    @classmethod
    def from_option(cls, out: Path, system_disks: int = 1) -> OutputPaths:
        """OUT.img (or OUT), OUT.initrd, OUT.cfg, and OUT-N.img (OUT-N) for
        the N-th of `system_disks`."""
        img = out.suffix == ".img"
        stem = out.with_suffix("") if img else out
        return cls(out, stem.with_name(stem.name + ".initrd"), stem.with_name(stem.name + ".cfg"),
                   tuple(stem.with_name(f"{stem.name}-{n}{out.suffix if img else ''}")
                         for n in range(2, system_disks + 1)))

    @classmethod
    def in_directory(cls, directory: Path, name: str) -> OutputPaths:
        """NAME.img, NAME.initrd and NAME.cfg in `directory` (several images
        converted at once: each named after its input)."""
        return cls.from_option(directory / f"{name}.img")

    @property
    def system_disks(self) -> tuple[Path, ...]:
        """Every converted system disk, in the VM's order."""
        return (self.image, *self.disks)

    def all(self) -> tuple[Path, ...]:
        """The disk first; the other system disks last, so that a commit
        renames the disks after the initrd and config (Staging.commit)."""
        return (self.image, self.initrd, self.cfg, *self.disks)


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
        """Rename every temporary into place, in order, the first final (the
        disk of a convert) last: a crash between two renames leaves no final
        first disk without its initrd, config and other system disks."""
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
