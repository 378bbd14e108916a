"""The VSA's own boot configuration (grub legacy: grub.conf / menu.lst), read
to tell which of two system slots is the one it boots.

A SAN/iQ upgrade installs the next release into the other system slot and
switches grub's default entry to it, so an image can hold two partitions that
look like a VSA root; the one the default entry's `root=` names is the live
one. Pure: text in, facts out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from vsaimage.model import PartitionFacts

# Where the VSA's menu is as the running VSA sees it: on the boot partition
# mounted at /boot, or in the root's own /boot.
GUEST_PATHS = ("/boot/grub/grub.conf", "/boot/grub/menu.lst")

_DEVICE = re.compile(r"/dev/(?:[sh]d|xvd|vd)[a-z](\d+)")


@dataclass(frozen=True)
class Entry:
    title: str
    line: int  # of its `title` line, 1-based
    kernel: tuple[str, ...] = ()  # the words of its kernel line after the image
    image: str = ""  # the kernel line's file
    initrd: str = ""  # the initrd line's file

    @property
    def root(self) -> str | None:
        """The value of root= on its kernel line (the last one wins, as in
        the kernel's own parsing)."""
        found = [w[len("root=") :] for w in self.kernel if w.startswith("root=")]
        return found[-1] if found else None


@dataclass(frozen=True)
class GrubConfig:
    entries: tuple[Entry, ...]
    default: int | None  # None: `default saved` or a value that names no entry
    default_line: str  # the `default` line as written, or "" (grub then boots entry 0)

    def default_entry(self) -> Entry | None:
        if self.default is None or not 0 <= self.default < len(self.entries):
            return None
        return self.entries[self.default]


def _keyword(line: str) -> tuple[str, str]:
    """(keyword, rest) of a grub line: `default=0` and `default 0` alike."""
    m = re.match(r"\s*([A-Za-z_]+)\s*(?:=\s*|\s+|$)(.*)", line)
    return (m.group(1).lower(), m.group(2).strip()) if m else ("", "")


def parse(text: str) -> GrubConfig:
    entries: list[Entry] = []
    default: int | None = 0
    default_line = ""
    for n, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        key, rest = _keyword(line)
        if key == "title":
            entries.append(Entry(rest, n))
        elif key == "kernel" and entries and rest:
            words = rest.split()
            entries[-1] = replace(entries[-1], image=words[0], kernel=tuple(words[1:]))
        elif key == "initrd" and entries and rest:
            entries[-1] = replace(entries[-1], initrd=rest.split()[0])
        elif key == "default" and not entries:
            default_line = line.strip()
            default = int(rest) if rest.isdigit() else None
    return GrubConfig(tuple(entries), default, default_line)


def default_root(config: str | GrubConfig) -> tuple[str | None, str]:
    """(root= of the default entry, how it was found), of a grub.conf text
    or of a config already parsed (syslinux.py parses its own)."""
    cfg = parse(config) if isinstance(config, str) else config
    entry = cfg.default_entry()
    said = cfg.default_line or "no default line: entry 0"
    if entry is None:
        return None, f"{said}: no such entry among {len(cfg.entries)}"
    if entry.root is None:
        return None, f"{said}: entry '{entry.title}' has no root= on its kernel line"
    return entry.root, f"{said}: entry '{entry.title}' boots root={entry.root}"


def matches(spec: str, part: PartitionFacts) -> bool:
    """Whether a device spec (a root= value, an fstab entry's device:
    UUID=, LABEL= or /dev/sdXN and the like) names this partition of the
    system disk."""
    if part.array:  # an md array: by its name, or its filesystem's UUID or label
        return spec == part.array or (spec.partition("=")[0] in ("UUID", "LABEL") and matches(
            spec, PartitionFacts(0, part.fstype, part.label, part.uuid)))
    key, _, value = spec.partition("=")
    if key == "UUID" and value:
        return part.uuid.lower() == value.lower()
    if key == "LABEL" and value:
        return part.label == value
    m = _DEVICE.fullmatch(spec)
    return m is not None and int(m.group(1)) == part.number


def pick_slot(candidates: Sequence[PartitionFacts], spec: str | None) -> PartitionFacts | None:
    """The one candidate root that the boot configuration's root= names, or
    None when it names none or several (two slots both labelled `/`)."""
    if spec is None:
        return None
    found = [p for p in candidates if matches(spec, p)]
    return found[0] if len(found) == 1 else None


def choose_slot(candidates: Sequence[PartitionFacts],
                configs: Mapping[str, str | GrubConfig]) -> tuple[int | None, str]:
    """(the partition number of the candidate root that a grub config's
    default entry boots, the reason naming every slot); None when no config
    settles it. `configs`: grub config texts (or parsed boot configs) by
    where they were read."""
    slots = ", ".join(str(p.number) for p in candidates)
    reasons = []
    for where, config in sorted(configs.items()):
        spec, why = default_root(config)
        picked = pick_slot(candidates, spec)
        if picked is not None:
            return picked.number, f"the default entry of {where} boots it ({why}); system slots: {slots}"
        reasons.append(f"{where}: {why}")
    return None, f"system slots: {slots}; " + ("; ".join(reasons) or "no grub config found")
