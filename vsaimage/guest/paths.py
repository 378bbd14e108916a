"""Resolving a path the way the running VSA's kernel would, one component at a
time, with symlinks (relative or absolute) followed inside the guest.

Pure: the caller supplies `lookup`, an lstat of a path that has no symlink in
it (the appliance asks libguestfs; hosttree.py asks a host directory
standing in for the guest root). What the edits must never touch is refused
here with the path named: a dangling symlink, a loop, a component that is not
a directory, and a place that is not the root filesystem of the disk (/proc,
/sys, /dev, or a mount point of another filesystem).
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from vsaimage.errors import GuestPathError
from vsaimage.model import GuestFile

Kind = Literal["dir", "file", "link", "other"]

# Linux gives up after 40 symlinks in one lookup (ELOOP); so do we.
MAX_LINKS = 40
# Not part of the disk in the running VSA: kernel and devtmpfs views.
VIRTUAL = ("/proc", "/sys", "/dev")


@dataclass(frozen=True)
class Entry:
    """What lstat says about one path."""

    kind: Kind
    mode: int = 0  # permission bits
    size: int = 0
    target: str | None = None  # a symlink's target, as stored


Lookup = Callable[[str], "Entry | None"]


@dataclass(frozen=True)
class Resolved:
    path: str  # as asked
    real: str  # the same place without any symlink
    entry: Entry | None  # what is there; None: nothing (yet)

    @property
    def kind(self) -> Kind | None:
        return None if self.entry is None else self.entry.kind


@dataclass(frozen=True)
class _LinkEnd:
    """Marks where the components of a symlink's target end on the stack."""

    link: str
    target: str


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


def resolve(path: str, lookup: Lookup, *, fenced: Iterable[str] = ()) -> Resolved:
    """`path` (absolute) with every symlink followed inside the guest.
    A path that does not exist resolves too (kind None), unless a symlink
    on the way points at nothing. `fenced`: mount points of filesystems other
    than the root, where the result must not land."""
    stack: list[str | _LinkEnd] = list(reversed(_components(path)))
    real: list[str] = []
    entry: Entry | None = Entry("dir")
    links = 0
    while stack:
        item = stack.pop()
        if isinstance(item, _LinkEnd):
            continue
        if entry is None:  # under something missing: the rest is missing too
            real.append(item)
            continue
        if entry.kind != "dir":
            raise GuestPathError(f"{path}: /{'/'.join(real)} is not a directory")
        if item == "..":
            if real:
                real.pop()
            continue
        here = "/" + "/".join([*real, item])
        _check_place(path, here, fenced)
        entry = lookup(here)
        if entry is None:
            link = next((x for x in reversed(stack) if isinstance(x, _LinkEnd)), None)
            if link is not None:
                raise GuestPathError(f"{_via(path, link.link)} is a dangling symlink (-> {link.target})")
            real.append(item)
        elif entry.kind == "link" and entry.target is not None:
            links += 1
            if links > MAX_LINKS:
                raise GuestPathError(f"{_via(path, here)} is in a symlink loop (-> {entry.target})")
            stack.append(_LinkEnd(here, entry.target))
            stack.extend(reversed(_components(entry.target)))
            if entry.target.startswith("/"):
                real = []
            entry = Entry("dir")  # the link's own directory, where its target starts
        else:
            real.append(item)
    return Resolved(path, "/" + "/".join(real), entry)


def _via(path: str, link: str) -> str:
    """`path`, naming the link on the way when it is another one."""
    return path if link == path else f"{path}: {link}"


def under(path: str, top: str) -> bool:
    """Whether `path` is `top` or below it (both symlink-free)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def _check_place(path: str, here: str, fenced: Iterable[str]) -> None:
    """Refuse to go on into /proc, /sys, /dev or another filesystem."""
    for top in VIRTUAL:
        if under(here, top):
            raise GuestPathError(f"{path} leads into {top}, which is not on the disk")
    for top in fenced:
        if top != "/" and under(here, top):
            raise GuestPathError(f"{path} leads into {top}, another filesystem")


def kind_of_mode(mode: int) -> Kind:
    if stat.S_ISLNK(mode):
        return "link"
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def read(path: str, resolver: Callable[[str], Resolved], fetch: Callable[[str], bytes]) -> GuestFile:
    """The file at `path` as the edits see it: data None when nothing or no
    regular file is there, and the reason when the path leads nowhere usable.
    `fetch` reads a symlink-free path."""
    try:
        r = resolver(path)
    except GuestPathError as e:
        return GuestFile(path, None, error=e.message)
    real = r.real if r.real != path else None
    if r.entry is None:
        return GuestFile(path, None, real=real)
    if r.entry.kind != "file":
        return GuestFile(path, None, r.entry.mode, real=real)
    return GuestFile(path, fetch(r.real), r.entry.mode, real=real)


def tree(directory: str, lookup: Lookup, find: Callable[[str], list[str]],
         lookup_many: Callable[[list[str]], list[Entry | None]], *,
         fenced: Iterable[str] = ()) -> set[str]:
    """Every path under `directory` as the guest shows it, symlinked
    directories followed (each real directory once, so loops end). `find`
    lists a symlink-free directory without following links (relative
    names); `lookup_many` is `lookup` for many paths at once. A directory
    that does not resolve has no paths; a link under it that does not
    resolve is listed, and not followed."""
    found: set[str] = set()
    seen: set[str] = set()

    def walk(shown: str, real: str) -> None:
        if real in seen:
            return
        seen.add(real)
        names = find(real)
        for name, entry in zip(names, lookup_many([posixpath.join(real, n) for n in names]), strict=True):
            path = posixpath.join(shown, name)
            found.add(path)
            if entry is None or entry.kind != "link":
                continue
            try:
                target = resolve(path, lookup, fenced=fenced)
            except GuestPathError:
                continue
            if target.kind == "dir":
                walk(path, target.real)

    try:
        top = resolve(directory, lookup, fenced=fenced)
    except GuestPathError:
        return found
    if top.kind == "dir":
        walk(directory.rstrip("/") or "/", top.real)
    return found
