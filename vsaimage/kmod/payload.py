"""The kernel modules payload of the `modules` edit, written on the host: one
tarball.

The modules of the dom0 kernel have to land in the guest's
`/lib/modules/<version>`. They travel as one tar stream through libguestfs's
`tar_in`, so this module only writes a tarball; it runs while the appliance
boots. The tar is uncompressed on purpose: decompressing inside the emulated
appliance costs more time than the smaller transfer saves, so the real saving
is sending fewer bytes (`minimal`: only the modules the VSA loads, with their
dependencies, and index files regenerated for that subset by depmod; which
modules those are is selection.py's business).

What goes into the tar: directories, regular files and hard links, owned by
root (uid/gid 0) whoever runs the tool, with their modes and mtimes. Left out:
symlinks that point outside the tree (`build` and `source` point into the
kernel headers, which do not exist in the guest), absolute symlinks, and
device nodes, fifos and sockets. Nothing is followed, so the tar never holds
anything from outside the modules directory.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vsaimage.errors import BadInput, VsaError
from vsaimage.kmod import depmod
from vsaimage.kmod.selection import SUFFIXES, select, wanted

_COPY_BUFSIZE = 1 << 20


@dataclass(frozen=True)
class PayloadSize:
    """What a payload puts into the guest's filesystem (measure() counts it
    without writing anything; build_payload reports the same)."""

    files: int  # regular files
    bytes: int  # their size
    dirs: int  # directories (and symlinks, an inode each too)

    def need(self, block: int) -> int:
        """The bytes it takes at most in a filesystem of `block`-byte
        blocks: each file and directory rounded up to whole blocks, and
        ext2/3's indirect blocks (one per 256 data blocks of 4 KiB is
        generous)."""
        return self.bytes + (self.files + self.dirs) * block + self.bytes // 256

    @property
    def inodes(self) -> int:
        return self.files + self.dirs

    def __str__(self) -> str:
        return f"{self.files} files, {self.bytes / 2**20:.1f} MiB"


@dataclass(frozen=True)
class ModulePayload:
    version: str
    tarball: Path
    files: int  # regular files in the tar
    bytes: int  # their uncompressed size
    minimal: bool
    modules: int  # .ko* files among them
    absent: tuple[str, ...] = ()  # wanted names this kernel has neither as module nor builtin
    builtin: tuple[str, ...] = ()  # wanted names built into this kernel: nothing to copy
    dropped: tuple[str, ...] = ()  # tree members left out (symlinks out, special files)
    dirs: int = 0  # directories and symlinks in the tar


def _walk(root: Path, rel: str = "") -> Iterator[tuple[str, Path, os.stat_result]]:
    """Every entry under `root`, sorted, parents first; symlinks not followed."""
    with os.scandir(root / rel if rel else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        yield name, Path(entry.path), st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(root, name)


def _link_stays_inside(name: str, target: str) -> bool:
    if target.startswith("/"):
        return False
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
    return resolved != ".." and not resolved.startswith("../")


@dataclass
class _Counts:
    files: int = 0
    bytes: int = 0
    modules: int = 0
    dirs: int = 0


def _kept(root: Path, dropped: list[str]) -> Iterator[tuple[str, Path, os.stat_result]]:
    """The entries of `root` that go into the payload; the names of those
    left out are added to `dropped`."""
    for name, path, st in _walk(root):
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            if not _link_stays_inside(name, os.readlink(path)):
                dropped.append(name)
                continue
        elif not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            dropped.append(name)
            continue
        yield name, path, st


def _count(counts: _Counts, name: str, st: os.stat_result) -> None:
    if stat.S_ISREG(st.st_mode):
        counts.files += 1
        counts.bytes += st.st_size
        counts.modules += name.endswith(SUFFIXES)
    else:
        counts.dirs += 1


def _write_tar(root: Path, out: BinaryIO) -> tuple[_Counts, list[str]]:
    counts = _Counts()
    dropped: list[str] = []
    # PAX keeps long names and large sizes exact; integer mtimes avoid a PAX
    # header per member for sub-second times.
    with tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_COPY_BUFSIZE) as tar:
        for name, path, st in _kept(root, dropped):
            _count(counts, name, st)
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = int(st.st_mtime)
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return counts, dropped


def _check_tree(modules_dir: Path, version: str) -> None:
    # The version becomes a directory name here and in the guest.
    if version in ("", ".", "..") or "/" in version or "\0" in version:
        raise BadInput(f"bad kernel version {version!r}")
    if not modules_dir.is_dir():
        raise BadInput(
            f"no modules directory {modules_dir} for kernel {version}",
            hint="install that kernel's modules or give their directory with --modules-dir",
        )
    if not (modules_dir / "modules.dep").is_file():
        raise BadInput(
            f"{modules_dir} has no modules.dep",
            hint=f"run 'depmod {version}' or give another directory with --modules-dir",
        )


def _stage_minimal(modules_dir: Path, version: str, paths: set[str], staging: Path) -> Path:
    """A modules tree holding only `paths` and index files regenerated for
    them; returns its `lib/modules/<version>` directory."""
    tree = staging / "lib" / "modules" / version
    tree.mkdir(parents=True)
    prefix = f"/lib/modules/{version}/"
    dirs: set[str] = set()
    for dep_path in sorted(paths):
        # Old depmods wrote absolute paths; they name the same tree.
        rel = dep_path.removeprefix(prefix) if dep_path.startswith("/") else dep_path
        source = modules_dir / rel
        if rel.startswith("/") or ".." in rel.split("/") or not source.is_file():
            raise BadInput(f"{modules_dir}/modules.dep names {dep_path}, which is not a module file")
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, tree / rel)
        parent = posixpath.dirname(rel)
        while parent:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    for name in depmod.INPUTS:
        entry = modules_dir / name
        if entry.is_file() and not entry.is_symlink():
            shutil.copy2(entry, tree / name)

    why = depmod.depmod(staging, version, otherwise="use the full modules tree")
    if why is None and not (tree / "modules.dep").is_file():
        why = "no modules.dep written"
    if why is not None:
        raise VsaError(f"depmod failed on the minimal modules tree: {why}")

    # Same inputs, same tarball: the files depmod wrote get the source index's
    # time, and directories the times and modes of their sources.
    index_time = (modules_dir / "modules.dep").stat().st_mtime
    for entry in tree.iterdir():
        if entry.is_file() and entry.name not in depmod.INPUTS:
            os.utime(entry, (index_time, index_time))
    for rel in sorted(dirs, key=lambda d: -d.count("/")):
        shutil.copystat(modules_dir / rel, tree / rel)
    shutil.copystat(modules_dir, tree)
    return tree


def build_payload(
    modules_dir: Path,
    version: str,
    dest: Path,
    *,
    minimal: bool = False,
    extra_modules: Sequence[str] = (),
    out: BinaryIO | None = None,
) -> ModulePayload:
    """Write the tar of `modules_dir` (members relative to it) to `dest`.

    `minimal`: only MINIMAL_MODULES and `extra_modules` with what they need,
    plus index files regenerated by depmod for that subset. `out`: `dest`
    already open for writing, by a caller that runs this in a thread and
    removes its scratch files when it ends: a thread that created `dest`
    after that would leave it behind.
    """
    _check_tree(modules_dir, version)
    try:
        with contextlib.ExitStack() as stack:
            raw = out if out is not None else stack.enter_context(dest.open("wb", buffering=_COPY_BUFSIZE))
            if not minimal:
                counts, dropped = _write_tar(modules_dir, raw)
                raw.flush()
                return ModulePayload(
                    version, dest, counts.files, counts.bytes, False, counts.modules,
                    dropped=tuple(dropped), dirs=counts.dirs,
                )
            selection = select(modules_dir, wanted(extra_modules))
            with tempfile.TemporaryDirectory(prefix="vsaimage-modules-") as staging:
                tree = _stage_minimal(modules_dir, version, selection.paths, Path(staging))
                counts, dropped = _write_tar(tree, raw)
            raw.flush()
            return ModulePayload(
                version, dest, counts.files, counts.bytes, True, counts.modules,
                absent=selection.absent, builtin=selection.builtin, dropped=tuple(dropped),
                dirs=counts.dirs,
            )
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def measure(modules_dir: Path, version: str, *, minimal: bool = False,
            extra_modules: Sequence[str] = ()) -> PayloadSize:
    """What build_payload would put into the guest, counted the same way
    without writing the tarball (the minimal tree is staged, a few MiB, for
    depmod's files)."""
    _check_tree(modules_dir, version)
    counts = _Counts()
    if not minimal:
        for name, _, st in _kept(modules_dir, []):
            _count(counts, name, st)
        return PayloadSize(counts.files, counts.bytes, counts.dirs)
    selection = select(modules_dir, wanted(extra_modules))
    with tempfile.TemporaryDirectory(prefix="vsaimage-modules-") as staging:
        tree = _stage_minimal(modules_dir, version, selection.paths, Path(staging))
        for name, _, st in _kept(tree, []):
            _count(counts, name, st)
    return PayloadSize(counts.files, counts.bytes, counts.dirs)
