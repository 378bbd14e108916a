"""The drivers an initrd lacks to mount the root under Xen (drivers.py
says which), added during the repack from the kernel's modules tree: their
files and those they depend on (kmod/selection.py resolves them as modprobe
would, soft dependencies included), kept as the tree has them (.ko, .ko.xz,
...), in the directory where the initrd keeps the kernel's modules; their
names in conf/modules, which init's load_modules modprobes; and depmod's
files regenerated.

Three loaders meet them at boot: udev (xen_blkfront by its modalias), the
root mount (the kernel asks for fs-ext3, an alias of ext4) and load_modules.
All go through kmod, which reads only the indexes (modules.dep.bin,
modules.alias.bin, ...): with kmod 30 (bookworm) and the .bin files removed,
`modprobe ext4` finds nothing, so amending the text files is not enough.
depmod rebuilds them from a temporary copy of the initrd's modules directory,
as mkinitramfs does (`depmod -a -b DESTDIR VERSION`); with an empty
configuration its output depends on nothing but those files (for a bookworm
initrd it is byte for byte what mkinitramfs wrote).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vsaimage.errors import BadInput, InitrdError
from vsaimage.initrd import drivers as initrd_drivers
from vsaimage.initrd.archive import S_IFDIR, S_IFREG, Header
from vsaimage.initrd.drivers import DriverCheck
from vsaimage.initrd.members import Members
from vsaimage.kmod import depmod
from vsaimage.kmod import selection as module_selection

CONF_MODULES = "conf/modules"


def listed(text: str) -> tuple[str, ...]:
    """The module names in a conf/modules (from /etc/initramfs-tools/modules):
    the first word of each line that is not blank or a comment."""
    return tuple(line.split()[0] for line in text.splitlines()
                 if line.strip() and not line.lstrip().startswith("#"))


def module_root(members: Members, version: str) -> str:
    """Where the initrd keeps the modules of `version`: their directory, else
    beside those of other versions, else usr/lib/modules when lib is a link
    (merged /usr, as bookworm's initrds) or lib/modules."""
    for base in ("usr/lib/modules", "lib/modules"):
        found = members.get(f"{base}/{version}".encode())
        if found is not None and found.isdir:
            return f"{base}/{version}"
    for base in ("usr/lib/modules", "lib/modules"):
        found = members.get(base.encode())
        if found is not None and found.isdir:
            return f"{base}/{version}"
    lib = members.get(b"lib")
    return f"{'usr/' if lib is not None and not lib.isdir else ''}lib/modules/{version}"


@dataclass(frozen=True)
class Addition:
    """The modules a repack adds, resolved against the tree."""

    tree: Path
    version: str
    root: str  # the initrd's directory for the modules of `version`
    names: tuple[str, ...]  # the drivers, for conf/modules
    files: tuple[str, ...]  # theirs and their dependencies', as modules.dep names them

    @property
    def paths(self) -> list[str]:
        """The files as the initrd holds them."""
        return [f"{self.root}/{f}" for f in self.files]


@dataclass(frozen=True)
class DriverPlan:
    """What the initrd lacks, what the repack adds, and what it cannot."""

    check: DriverCheck
    version: str
    tree: Path | None  # the kernel's modules tree, when there is one
    addition: Addition | None
    unavailable: tuple[str, ...]

    def why(self) -> str:
        if self.addition is None and not self.unavailable:
            return "each is in the initrd or built into the kernel"
        parts = []
        if self.addition is not None:
            parts.append(f"{', '.join(self.addition.names)}: neither in the initrd nor built into the "
                         f"kernel; added from {self.tree} with what they depend on "
                         f"({len(self.addition.files)} files), listed in {CONF_MODULES}, "
                         "depmod's files regenerated")
        if self.unavailable and self.tree is not None:
            parts.append(f"{', '.join(self.unavailable)}: neither in the initrd, nor built into the "
                         f"kernel, nor in {self.tree}")
        elif self.unavailable:
            parts.append(f"{', '.join(self.unavailable)}: not in the initrd, and no modules tree for "
                         f"{self.version} to tell whether the kernel has it built in or to add it from")
        return "; ".join(parts)

    def warnings(self, initrd: object) -> list[str]:
        """One line for what the repack cannot add."""
        if not self.unavailable:
            return []
        if self.tree is None:
            return [f"{initrd} has no {', '.join(self.unavailable)} and there is no modules tree for "
                    f"{self.version} (--modules-dir) to tell whether the kernel has it built in or to "
                    "add it from: the guest may not mount its root under Xen"]
        return [f"{initrd} has no {', '.join(self.unavailable)}, as a module or built into the kernel, "
                f"and {self.tree} has none to add: the guest cannot mount its root under Xen"]

    def as_dict(self) -> dict[str, object]:
        add = self.addition
        return {**self.check.as_dict(), "added": list(add.names) if add else [],
                "files": add.paths if add else [], "unavailable": list(self.unavailable),
                "source": str(self.tree) if self.tree else None, "why": self.why()}


def check(module_files: Iterable[str], tree: Path, fstype: str,
          more: tuple[tuple[str, ...], ...] = ()) -> DriverCheck:
    """initrd_drivers.check with what the kernel of `tree` has built in (when
    the tree says: without modules.builtin, only the initrd counts)."""
    builtin = tree / "modules.builtin"
    text = builtin.read_text("utf-8", "replace") if builtin.is_file() else ""
    return initrd_drivers.check(module_files, text, fstype, more)


def plan(drivers: DriverCheck, tree: Path, version: str, root: str) -> DriverPlan:
    """Resolve what `drivers` lacks against `tree` (unless it is no modules
    tree: no modules.dep): for each need, the first of its drivers the tree
    has, with its dependencies; files the initrd already has are left out.
    `root`: where the initrd keeps the modules of `version`."""
    if not (tree / "modules.dep").is_file():
        return DriverPlan(drivers, version, None, None, tuple(drivers.missing))
    names: list[str] = []
    files: set[str] = set()
    unavailable: list[str] = []
    for needs in drivers.missing_needs:
        for name in needs:
            selection = module_selection.select(tree, [name])
            if selection.builtin:
                break
            if selection.paths:
                names.append(name)
                files |= {p for p in selection.paths if module_selection.normalise(p) not in drivers.found}
                break
        else:
            unavailable.append(needs[0])
    addition = Addition(tree, version, root, tuple(names), tuple(sorted(files))) if names else None
    return DriverPlan(drivers, version, tree, addition, tuple(unavailable))


def add(members: Members, addition: Addition) -> tuple[list[str], list[str]]:
    """Put the modules of `addition` in, list them in conf/modules and
    regenerate depmod's files; returns the paths added and changed."""
    added: list[str] = []
    changed: list[str] = []
    inputs = [name for name in depmod.INPUTS if (addition.tree / name).is_file()
              and members.get(f"{addition.root}/{name}".encode()) is None]
    for rel in (*inputs, *addition.files):
        key = f"{addition.root}/{rel}"
        parent = directory(members, key.rpartition("/")[0], added)
        members.add(key.encode(), S_IFREG | 0o644, _read(addition.tree / rel), like=parent)
        added.append(key)
    _list_in_conf(members, addition.names, added, changed)
    _depmod(members, addition.root, addition.version, added, changed)
    return added, changed


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BadInput(f"cannot read {path}: {e.strerror or e}") from e


def directory(members: Members, key: str, added: list[str]) -> Header:
    """The directory `key`, made with its missing parents (0755; their keys
    go to `added`)."""
    found = members.get(key.encode())
    if found is not None:
        if not found.isdir:
            raise InitrdError(f"cannot add modules to the initrd: {key} in it is not a directory")
        return found
    parent_key = key.rpartition("/")[0]
    like = directory(members, parent_key, added) if parent_key else members.first
    added.append(key)
    return members.add(key.encode(), S_IFDIR | 0o755, like=like)


def _list_in_conf(members: Members, names: tuple[str, ...], added: list[str],
                  changed: list[str]) -> None:
    conf = members.get(CONF_MODULES.encode())
    if conf is not None and not conf.isreg:
        raise InitrdError(f"cannot list the added modules: {CONF_MODULES} in the initrd is not a file")
    text = (members.text(CONF_MODULES.encode()) or b"").decode("utf-8", "surrogateescape")
    have = {module_selection.normalise(n) for n in listed(text)}
    new = [n for n in names if module_selection.normalise(n) not in have]
    if not new:
        return
    body = (text + ("\n" if text and not text.endswith("\n") else "") + "".join(f"{n}\n" for n in new))
    data = body.encode("utf-8", "surrogateescape")
    if conf is None:
        members.add(CONF_MODULES.encode(), S_IFREG | 0o644, data,
                    like=directory(members, CONF_MODULES.rpartition("/")[0], added))
        added.append(CONF_MODULES)
    else:
        members.set_data(CONF_MODULES.encode(), data)
        changed.append(CONF_MODULES)


def _depmod(members: Members, root: str, version: str, added: list[str], changed: list[str]) -> None:
    """Regenerate depmod's files in `root` from the modules and depmod.INPUTS
    there. Only that directory's modules are written to disk (depmod reads
    them), not the initrd; depmod's own files are small and kept in memory."""
    with tempfile.TemporaryDirectory(prefix="vsaimage-depmod-") as tmp:
        top = Path(tmp, "lib/modules", version)
        config = Path(tmp, "depmod.d")
        config.mkdir()
        top.mkdir(parents=True)
        direct = members.extract(f"{root}/".encode(), top)
        for name in depmod.INPUTS:
            if name in direct:
                (top / name).write_bytes(direct[name])
        why = depmod.depmod(Path(tmp), version, config=config)
        if why is not None:
            raise InitrdError(f"depmod failed on the initrd's modules: {why}")
        root_dir = members.get(root.encode())
        assert root_dir is not None, "the modules were added under it"
        for path in sorted(top.iterdir()):
            if path.name in depmod.INPUTS or not path.is_file():
                continue
            key = f"{root}/{path.name}"
            data = path.read_bytes()
            if members.get(key.encode()) is None:
                members.add(key.encode(), S_IFREG | 0o644, data, like=root_dir)
                added.append(key)
            elif direct.get(path.name) != data:
                members.set_data(key.encode(), data)
                changed.append(key)
