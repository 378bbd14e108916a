"""Repack an initramfs-tools initrd with the `bind` half of the PCI step:
add (or take out) `scripts/init-bottom/pcihack` and its ORDER line, add the
drivers it lacks to mount the root under Xen, and write the result back byte
for byte reproducible.

In two halves, so that convert can read the initrd while the appliance
boots and decide on the drivers once it knows the root filesystem: prepare()
reads it and applies pcihack, finish() adds the drivers and compresses.

The pieces: cpio.py splits the file into its segments, archive.py reads and
writes the main one through libarchive, edits/pcihack.py holds the script and
the ORDER text edit, initrd_modules.py the drivers. Early uncompressed
segments are kept byte for byte, first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from vsaimage import archive, cpio, initrd_modules
from vsaimage.archive import S_IFDIR, S_IFREG, Entry, Members
from vsaimage.cpio import COMPRESSIONS
from vsaimage.edits.pcihack import (
    ORDER_PATH,
    PCIHACK_PATH,
    PCIHACK_SCRIPT,
    Action,
    order_with_pcihack,
    order_without_pcihack,
)
from vsaimage.errors import InitrdError

_MODULES_RE = re.compile(rb"^(?:usr/)?lib/modules/([^/]+)(?:/|$)")


@dataclass(frozen=True)
class RepackResult:
    compression: str
    input_compression: str
    early_segments: int
    entries: int
    pcihack: Action  # what was asked: add, remove, or keep the initrd as it is
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    already_applied: bool
    module_versions: tuple[str, ...]
    conf_modules: tuple[str, ...]  # what conf/modules loads at boot: the guest needs them too
    input_bytes: int
    output_bytes: int
    # the kernel modules inside (paths), for initrd_drivers; too long for the report
    module_files: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if k != "module_files"}


def _source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InitrdError(f"SOURCE_DATE_EPOCH is not an integer: {value!r}") from None


@dataclass
class _Changes:
    added: list[str]
    changed: list[str]
    removed: list[str]

    @property
    def none(self) -> bool:
        return not self.added and not self.changed and not self.removed


def _apply(members: Members, action: Action) -> _Changes:
    """Put pcihack in (add) or take it out (remove), in place."""
    done = _Changes([], [], [])
    if action == "add":
        _add(members, done)
    elif action == "remove":
        script = members.get(PCIHACK_PATH.encode())
        if script is not None:
            members.remove(script)
            done.removed.append(PCIHACK_PATH)
    _edit_order(members, order_with_pcihack if action == "add" else order_without_pcihack, action, done)
    return done


def _edit_order(members: Members, edit: Callable[[str], str], action: Action,
                done: _Changes) -> None:
    order = members.get(ORDER_PATH.encode())
    if action == "keep" or order is None or not order.isreg:
        return
    text = order.data.decode("utf-8", "surrogateescape")
    new = edit(text)
    if new != text:
        order.set_data(new.encode("utf-8", "surrogateescape"))
        done.changed.append(ORDER_PATH)


def _add(members: Members, done: _Changes) -> None:
    """Add the script (and init-bottom when missing)."""
    scripts_dir = members.get(b"scripts")
    if scripts_dir is None or not scripts_dir.isdir:
        if any(e.key.startswith((b"usr/lib/dracut", b"lib/dracut")) for e in members.entries):
            raise InitrdError("unsupported initrd: it looks like a dracut initrd "
                              "(no scripts/ directory); only initramfs-tools is supported")
        raise InitrdError("not an initramfs-tools initrd: no scripts/ directory in it")
    added, changed = done.added, done.changed

    bottom = members.get(b"scripts/init-bottom")
    if bottom is None:
        bottom = members.add(b"scripts/init-bottom", S_IFDIR | 0o755, like=scripts_dir)
        added.append("scripts/init-bottom")

    script = members.get(PCIHACK_PATH.encode())
    if script is not None and not script.isreg:
        members.remove(script)
        script = None
        changed.append(PCIHACK_PATH)
    if script is None:
        members.add(PCIHACK_PATH.encode(), S_IFREG | 0o755, PCIHACK_SCRIPT, like=bottom)
        if PCIHACK_PATH not in changed:
            added.append(PCIHACK_PATH)
    elif script.data != PCIHACK_SCRIPT or script.mode != S_IFREG | 0o755:
        script.set_data(PCIHACK_SCRIPT)
        script.set_mode(S_IFREG | 0o755)
        changed.append(PCIHACK_PATH)


def _module_versions(entries: Iterable[Entry]) -> tuple[str, ...]:
    found = set()
    for entry in entries:
        match = _MODULES_RE.match(entry.key)
        if match:
            found.add(match.group(1).decode("utf-8", "replace"))
    return tuple(sorted(found))


def _conf_modules(members: Members) -> tuple[str, ...]:
    """The module names in conf/modules: what init loads at boot."""
    conf = members.get(initrd_modules.CONF_MODULES.encode())
    if conf is None or not conf.isreg:
        return ()
    return initrd_modules.listed(conf.data.decode("utf-8", "replace"))


def _module_files(entries: Iterable[Entry]) -> tuple[str, ...]:
    return tuple(e.key.decode("utf-8", "replace") for e in entries
                 if e.isreg and b"/modules/" in e.key and b".ko" in e.key)


@dataclass
class Prepared:
    """An initrd read, with pcihack applied: the first half of a repack.
    finish() edits its members, so each is finished once."""

    data: bytes
    split: cpio.Split
    members: Members
    action: Action
    done: _Changes

    @property
    def module_files(self) -> tuple[str, ...]:
        """The kernel modules inside (paths), for initrd_drivers."""
        return _module_files(self.members.entries)

    @property
    def conf_modules(self) -> tuple[str, ...]:
        return _conf_modules(self.members)

    @property
    def done_nothing(self) -> bool:
        """pcihack was already as asked."""
        return self.done.none

    def module_root(self, version: str) -> str:
        return initrd_modules.module_root(self.members, version)


def prepare(data: bytes, *, action: Action = "add") -> Prepared:
    """Read the initrd and put pcihack in (or take it out, or leave it:
    `action`)."""
    split = cpio.split(data)
    entries = archive.read_main(split)
    if not entries:
        raise InitrdError("not an initramfs-tools initrd: its main cpio segment is empty")
    epoch = _source_date_epoch()
    members = Members(entries, epoch if epoch is not None else max(e.mtime for e in entries))
    return Prepared(data, split, members, action, _apply(members, action))


def finish(prepared: Prepared, *, compression: str | None = None, threads: int = 2,
           drivers: initrd_modules.Addition | None = None) -> tuple[bytes, RepackResult]:
    """Add the `drivers` modules, and write the initrd; returns it and what
    was done.

    Early uncompressed segments are kept byte for byte and first; the main
    segment is rewritten as newc, sorted, with every header field kept.
    `threads` is the zstd worker count (fixed, for reproducible bytes).
    """
    if compression is not None and compression not in COMPRESSIONS:
        raise InitrdError(f"unknown initrd compression {compression!r}",
                          hint=f"choose one of {', '.join(COMPRESSIONS)}")
    if threads < 0:
        raise InitrdError(f"zstd thread count must be 0 or more, not {threads}")
    done, split, data = prepared.done, prepared.split, prepared.data
    if drivers is not None:
        added, changed = initrd_modules.add(prepared.members, drivers)
        done.added += added
        done.changed += changed
    entries = prepared.members.entries
    out_compression = compression or split.compression
    applied = done.none
    entries.sort(key=archive.sort_key)
    archive.hardlinks_data_on_last(entries)
    if applied and out_compression == split.compression:
        # Nothing to change: the input is the answer (idempotent, byte for byte).
        out = data
    else:
        out = split.early + archive.compress_main(entries, out_compression, threads)
    result = RepackResult(
        compression=out_compression,
        input_compression=split.compression,
        early_segments=split.early_segments,
        entries=len(entries),
        pcihack=prepared.action,
        added=tuple(done.added),
        changed=tuple(done.changed),
        removed=tuple(done.removed),
        already_applied=applied,
        module_versions=_module_versions(entries),
        conf_modules=_conf_modules(prepared.members),
        input_bytes=len(data),
        output_bytes=len(out),
        module_files=_module_files(entries),
    )
    return out, result


def repack(data: bytes, *, compression: str | None = None, threads: int = 2,
           action: Action = "add") -> tuple[bytes, RepackResult]:
    """Return the initrd with pcihack added (or removed, or left as it is:
    `action`), and what was done; see finish()."""
    return finish(prepare(data, action=action), compression=compression, threads=threads)


def check(data: bytes, action: Action = "add") -> bool:
    """Postcondition: pcihack is present (0755, our content) and listed in
    ORDER if any (add), or neither (remove); anything goes for keep."""
    if action == "keep":
        return True
    entries = archive.read_main(cpio.split(data))
    by_key = {e.key: e for e in entries}
    script = by_key.get(PCIHACK_PATH.encode())
    order = by_key.get(ORDER_PATH.encode())
    text = order.data.decode("utf-8", "surrogateescape") if order is not None else None
    if action == "remove":
        return script is None and (text is None or order_without_pcihack(text) == text)
    if script is None or not script.isreg or script.mode & 0o7777 != 0o755:
        return False
    return script.data == PCIHACK_SCRIPT and (text is None or order_with_pcihack(text) == text)

