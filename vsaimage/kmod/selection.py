"""Which kernel modules the guest gets with `--modules minimal`: the modules
the VSA loads under Xen (vsa/drivers.py, which the drivers edit puts into
rc.drivers, and its own scripts) and what the initrd loads at boot, resolved
the way modprobe would (aliases, dependencies, soft dependencies), against
the modules tree of the dom0 kernel; and module names as modprobe compares
them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vsaimage.vsa import drivers

# What the VSA loads under Xen, and the modules that serve those names on a
# newer kernel (ext3 is ext4, rd is brd, md is md_mod: modules.alias says so
# too) or that ext3 and ext4 mount with. Names that are not modules of the
# given kernel are resolved through modules.alias; what still is not found is
# reported absent.
MINIMAL_MODULES = (*drivers.NAMES, "ext4", "jbd", "jbd2", "md_mod", "brd")

SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def normalise(name: str) -> str:
    """A module name as modprobe compares it: no directory, no .ko suffix, '_' for '-'."""
    base = posixpath.basename(name.strip())
    for suffix in SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def module_name(path: str) -> str | None:
    """`xen_blkfront` for .../xen-blkfront.ko.zst: the name modprobe uses;
    None for a file that is no module."""
    return normalise(path) if posixpath.basename(path.strip()).endswith(SUFFIXES) else None


def _parse_dep(modules_dep: str) -> dict[str, tuple[str, list[str]]]:
    """module name -> (its path, the paths it depends on)."""
    table: dict[str, tuple[str, list[str]]] = {}
    for line in modules_dep.splitlines():
        path, sep, deps = line.partition(":")
        if not sep or not path.strip():
            continue
        table.setdefault(normalise(path), (path.strip(), deps.split()))
    return table


def closure(modules_dep: str, wanted: Iterable[str]) -> set[str]:
    """Paths (as modules.dep writes them) of the `wanted` modules and of
    everything they depend on, transitively. Names are compared normalised;
    names modules.dep does not know are ignored. Cycles are harmless."""
    table = _parse_dep(modules_dep)
    by_path = {path: name for name, (path, _) in table.items()}
    todo = [normalise(w) for w in wanted]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in table:
            continue
        seen.add(name)
        _, deps = table[name]
        todo.extend(by_path.get(d, normalise(d)) for d in deps)
    return {table[name][0] for name in seen}


def _aliases(modules_alias: str) -> dict[str, set[str]]:
    """Exact (wildcard-free) alias -> module names; device aliases are globs
    and are not names anyone passes to modprobe by hand."""
    table: dict[str, set[str]] = {}
    for line in modules_alias.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "alias" and not any(c in words[1] for c in "*?["):
            table.setdefault(normalise(words[1]), set()).add(normalise(words[2]))
    return table


def _softdeps(modules_softdep: str) -> dict[str, set[str]]:
    """module name -> the names modprobe also loads with it (pre: and post:)."""
    table: dict[str, set[str]] = {}
    for line in modules_softdep.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] != "softdep":
            continue
        names = {normalise(w) for w in words[2:] if w not in ("pre:", "post:")}
        table.setdefault(normalise(words[1]), set()).update(names)
    return table


@dataclass(frozen=True)
class Selection:
    paths: set[str]
    absent: tuple[str, ...]
    builtin: tuple[str, ...]


def select(modules_dir: Path, wanted: Sequence[str]) -> Selection:
    """The module paths to ship for `wanted`, following aliases, dependencies
    and soft dependencies, the way modprobe would resolve them."""
    dep = (modules_dir / "modules.dep").read_text(encoding="utf-8", errors="replace")
    known = set(_parse_dep(dep))
    builtin = {normalise(p) for p in _read_optional(modules_dir / "modules.builtin").split()}
    aliases = _aliases(_read_optional(modules_dir / "modules.alias"))
    softdeps = _softdeps(_read_optional(modules_dir / "modules.softdep"))

    def resolve(name: str) -> set[str]:
        if name in known or name in builtin:
            return {name}
        return aliases.get(name, set())

    absent: list[str] = []
    found_builtin: list[str] = []
    names: set[str] = set()
    for raw in wanted:
        name = normalise(raw)
        targets = resolve(name)
        if not targets:
            absent.append(raw)
        elif targets <= builtin:
            found_builtin.append(raw)
        names |= targets & known

    # Soft dependencies of what is shipped (ext4 wants crc32c, for one): a
    # missing one is silently skipped by modprobe, so follow them, quietly.
    paths = closure(dep, names)
    while True:
        more = {t for p in paths for s in softdeps.get(normalise(p), ()) for t in resolve(s)}
        more &= known
        grown = closure(dep, names | more)
        if grown == paths:
            break
        names |= more
        paths = grown
    return Selection(paths, tuple(dict.fromkeys(absent)), tuple(dict.fromkeys(found_builtin)))


def _read_optional(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def wanted(extra_modules: Sequence[str]) -> list[str]:
    # Lines of an initrd's conf/modules may carry parameters or comments.
    names = list(MINIMAL_MODULES)
    for line in extra_modules:
        words = line.split("#", 1)[0].split()
        if words:
            names.append(words[0])
    return names
