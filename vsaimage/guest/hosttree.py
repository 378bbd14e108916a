"""A host directory standing in for the guest root: the tests and the bench
read the fixture tree through it, with the resolver of paths.py, exactly as
the appliance reads a guest. Not used by the commands."""

from __future__ import annotations

import os
from pathlib import Path

from vsaimage.guest.paths import Entry, Resolved, kind_of_mode, read, resolve, tree
from vsaimage.model import GuestFile


class HostTree:
    """A host directory standing in for the guest root (the bench and the
    tests read the fixture tree through it). Links are read, never followed
    by the host: the resolver follows them below `top`."""

    def __init__(self, top: Path) -> None:
        self.top = top

    def _host(self, path: str) -> Path:
        return self.top / path.lstrip("/")

    def lookup(self, path: str) -> Entry | None:
        try:
            st = self._host(path).lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        kind = kind_of_mode(st.st_mode)
        target = os.readlink(self._host(path)) if kind == "link" else None
        return Entry(kind, st.st_mode & 0o7777, st.st_size, target)

    def resolve(self, path: str) -> Resolved:
        return resolve(path, self.lookup)

    def read(self, path: str) -> GuestFile:
        return read(path, self.resolve, lambda real: self._host(real).read_bytes())

    def list(self, directory: str) -> set[str]:
        def find(real: str) -> list[str]:
            top = self._host(real)
            return [str(p.relative_to(top)) for p in sorted(top.rglob("*"))]

        return tree(directory, self.lookup, find, lambda paths: [self.lookup(p) for p in paths])
