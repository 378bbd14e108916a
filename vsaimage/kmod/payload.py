"""The kernel modules payload of the `modules` edit, written on the host
while the appliance boots: a tarball, or an ext2 image.

The modules of the dom0 kernel have to land in the guest's
`/lib/modules/<version>`. Two ways in (`transport`, chosen before the
launch): a tar stream through libguestfs's `tar_in`, or an ext2 filesystem
image attached to the appliance as an extra read-only drive and copied
inside it (`cp -a`), which no byte of the tree crosses the libguestfs
channel for. The full tree (~390 MiB) goes by image: under TCG the channel
moves ~13 MB/s, and the copy inside the appliance takes half of tar_in's
time. A minimal payload (a few MiB) goes by tar: the image's mount, flush
and unmount would cost more than its bytes. Neither is compressed:
decompressing inside the emulated appliance costs more than the smaller
transfer saves; the saving is sending fewer bytes (`minimal`: only the
modules the VSA loads, with their dependencies, and index files regenerated
for that subset by depmod; which modules those are is selection.py's
business).

What goes in, either way: directories, regular files and hard links, owned
by root (uid/gid 0) whoever runs the tool, with their modes and whole-second
mtimes. Left out: symlinks that point outside the tree (`build` and `source`
point into the kernel headers, which do not exist in the guest), absolute
symlinks, and device nodes, fifos and sockets. Nothing is followed, so the
payload never holds anything from outside the modules directory. The image
is made by `mke2fs -d` (no root needed), then one debugfs script gives it
the tar's content: owners 0:0, the left-out members removed, no lost+found.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from vsaimage import tools
from vsaimage.errors import BadInput, VsaError
from vsaimage.kmod import depmod
from vsaimage.kmod.selection import SUFFIXES, select, wanted

_COPY_BUFSIZE = 1 << 20
_BLOCK = 4096

Transport = Literal["tar", "image"]


def transport(*, minimal: bool) -> Transport:
    """How the payload goes into the guest (the module's docstring says
    why): the full tree by image, a minimal one by tar."""
    return "tar" if minimal else "image"


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
    file: Path  # the tar, or the ext2 image
    files: int  # regular files in it
    bytes: int  # their uncompressed size
    minimal: bool
    modules: int  # .ko* files among them
    absent: tuple[str, ...] = ()  # wanted names this kernel has neither as module nor builtin
    builtin: tuple[str, ...] = ()  # wanted names built into this kernel: nothing to copy
    dropped: tuple[str, ...] = ()  # tree members left out (symlinks out, special files)
    dir_count: int = 0  # directories and symlinks in it
    transport: Transport = "tar"


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
    dirs: int = 0  # directories and symlinks
    dropped: list[str] = field(default_factory=list)
    linked: set[tuple[int, int]] = field(default_factory=set)  # (st_dev, st_ino) of files with hard links

    def add(self, name: str, size: int) -> None:
        self.files += 1
        self.bytes += size
        if name.endswith(SUFFIXES):
            self.modules += 1

    def count(self, name: str, st: os.stat_result) -> None:
        """A member the payload holds: a file, else a directory or symlink.
        A file's further hard links are one inode, counted once (the tar
        holds them as links, the image as the same inode)."""
        if stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in self.linked:
                    return
                self.linked.add((st.st_dev, st.st_ino))
            self.add(name, st.st_size)
        else:
            self.dirs += 1


def _members(root: Path, counts: _Counts) -> Iterator[tuple[str, Path, os.stat_result]]:
    """The entries of `root` that go into the payload, parents first; those
    left out are named in `counts.dropped`."""
    for name, path, st in _walk(root):
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            if not _link_stays_inside(name, os.readlink(path)):
                counts.dropped.append(name)
                continue
        elif not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            counts.dropped.append(name)
            continue
        yield name, path, st


def _write_tar(root: Path, out: BinaryIO) -> _Counts:
    counts = _Counts()
    # PAX keeps long names and large sizes exact; integer mtimes avoid a PAX
    # header per member for sub-second times.
    with tarfile.TarFile(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, copybufsize=_COPY_BUFSIZE) as tar:
        for name, path, st in _members(root, counts):
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = int(st.st_mtime)
            counts.count(name, st)
            if info.isreg():
                with path.open("rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return counts


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
                counts = _write_tar(modules_dir, raw)
                raw.flush()
                return ModulePayload(
                    version, dest, counts.files, counts.bytes, False, counts.modules,
                    dropped=tuple(counts.dropped), dir_count=counts.dirs,
                )
            selection = select(modules_dir, wanted(extra_modules))
            with tempfile.TemporaryDirectory(prefix="vsaimage-modules-") as staging:
                tree = _stage_minimal(modules_dir, version, selection.paths, Path(staging))
                counts = _write_tar(tree, raw)
            raw.flush()
            return ModulePayload(
                version, dest, counts.files, counts.bytes, True, counts.modules,
                absent=selection.absent, builtin=selection.builtin, dropped=tuple(counts.dropped),
                dir_count=counts.dirs,
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
        for name, _, st in _members(modules_dir, counts):
            counts.count(name, st)
        return PayloadSize(counts.files, counts.bytes, counts.dirs)
    selection = select(modules_dir, wanted(extra_modules))
    with tempfile.TemporaryDirectory(prefix="vsaimage-modules-") as staging:
        tree = _stage_minimal(modules_dir, version, selection.paths, Path(staging))
        for name, _, st in _members(tree, counts):
            counts.count(name, st)
    return PayloadSize(counts.files, counts.bytes, counts.dirs)


# --- the payload as an ext2 image ----------------------------------------------


@dataclass
class _Tree:
    """What an image of a tree needs, from one walk: its members' counts,
    room and owners, and its top's mtime."""

    counts: _Counts
    top_mtime: int
    inodes: int = 0
    blocks: int = 0
    not_root: list[str] = field(default_factory=list)


def _survey(root: Path) -> _Tree:
    tree = _Tree(_Counts(), int(root.stat().st_mtime))
    seen: set[tuple[int, int]] = set()
    for name, _path, st in _members(root, tree.counts):
        if (st.st_uid, st.st_gid) != (0, 0):
            tree.not_root.append(name)
        if not stat.S_ISREG(st.st_mode):
            tree.counts.dirs += 1
        if (st.st_dev, st.st_ino) in seen:  # a hard link: one inode, counted once (as the tar does)
            continue
        seen.add((st.st_dev, st.st_ino))
        if stat.S_ISREG(st.st_mode):
            tree.counts.add(name, st.st_size)
        tree.inodes += 1
        blocks = -(-st.st_size // _BLOCK)
        # ext2 maps a file's blocks past the 12th through indirect blocks
        tree.blocks += blocks + blocks // 1024 + (1 if blocks > 12 else 0)
    return tree


def image_size(modules_dir: Path) -> int:
    """The size of the image file for the payload of `modules_dir`, known
    before the payload is built (convert attaches the file when the
    appliance starts and fills it while it boots): room for the whole tree,
    which also holds any minimal selection of it. The file is sparse."""
    tree = _survey(modules_dir)
    size = _BLOCK * tree.blocks * 17 // 16 + 256 * (tree.inodes + 64) + 16 * 2**20
    return -(-size // 2**20) * 2**20


def _debugfs_name(name: str) -> str:
    if any(c in name for c in '"\n\\'):
        raise BadInput(f"modules tree member {name!r}: a name the image builder cannot write")
    return f'"/{name}"'


def _make_image(root: Path, dest: Path) -> _Tree:
    """`root` as an ext2 filesystem in `dest`, an existing file whose size
    stays as it is (the appliance holds it open)."""
    tree = _survey(root)
    # 128-byte inodes hold whole-second times, as the tar does
    made = tools.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", str(_BLOCK), "-I", "128", "-m", "0",
                      "-N", str(tree.inodes + 16), "-O", "^resize_inode", "-E", "root_owner=0:0,nodiscard",
                      "-d", str(root), str(dest)], "e2fsprogs", env={"LC_ALL": "C"})
    if made.returncode != 0:
        _image_failed("mke2fs", made.stderr)
    script = ["rmdir /lost+found", *(f"rm {_debugfs_name(n)}" for n in reversed(tree.counts.dropped))]
    for n in tree.not_root:
        script += [f"sif {_debugfs_name(n)} uid 0", f"sif {_debugfs_name(n)} gid 0"]
    script.append(f"sif / mtime @{tree.top_mtime}")
    with tempfile.NamedTemporaryFile("w", prefix="vsaimage-debugfs-", suffix=".txt") as commands:
        commands.write("\n".join(script) + "\n")
        commands.flush()
        edited = tools.run(["debugfs", "-w", "-f", commands.name, str(dest)], "e2fsprogs",
                           env={"LC_ALL": "C"})
    errors = [e for e in edited.stderr.splitlines() if e.strip() and not e.startswith("debugfs ")]
    if edited.returncode != 0 or errors:
        _image_failed("debugfs", "\n".join(errors) or f"exit {edited.returncode}")
    return tree


def _image_failed(program: str, said: str) -> None:
    if "No space left" in said or "Could not allocate" in said:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    raise VsaError(f"{program} failed on the modules image: "
                   f"{tools.reason(said, program, default='no message')}")


def build_image(
    modules_dir: Path,
    version: str,
    dest: Path,
    *,
    minimal: bool = False,
    extra_modules: Sequence[str] = (),
) -> ModulePayload:
    """The payload build_payload would write, as an ext2 image written into
    the existing file `dest` (sized by image_size). A full disk is an
    OSError (ENOSPC), which the caller says for its output."""
    _check_tree(modules_dir, version)
    with contextlib.ExitStack() as stack:
        selection = None
        tree_dir = modules_dir
        if minimal:
            selection = select(modules_dir, wanted(extra_modules))
            staging = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vsaimage-modules-")))
            tree_dir = _stage_minimal(modules_dir, version, selection.paths, staging)
        tree = _make_image(tree_dir, dest)
    c = tree.counts
    return ModulePayload(version, dest, c.files, c.bytes, minimal, c.modules,
                         absent=selection.absent if selection else (),
                         builtin=selection.builtin if selection else (), dropped=tuple(c.dropped),
                         dir_count=c.dirs, transport="image")
