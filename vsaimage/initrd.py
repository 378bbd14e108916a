"""Repack an initramfs-tools initrd with the `bind` half of the PCI step:
add (or take out) `scripts/init-bottom/pcihack` and its ORDER line, and write
the result back byte for byte reproducible.

The pieces: cpio.py splits the file into its segments, archive.py reads and
writes the main one through libarchive, edits/pcihack.py holds the script and
the ORDER text edit. Early uncompressed segments are kept byte for byte, first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from vsaimage import archive, cpio
from vsaimage.archive import S_IFDIR, S_IFREG, Entry
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


def _apply(entries: list[Entry], action: Action) -> _Changes:
    """Put pcihack in (add) or take it out (remove), in place."""
    by_key = {e.key: e for e in entries}  # later duplicates win, as in the kernel
    done = _Changes([], [], [])
    if action == "add":
        _add(entries, by_key, done)
    elif action == "remove":
        script = by_key.get(PCIHACK_PATH.encode())
        if script is not None:
            entries.remove(script)
            done.removed.append(PCIHACK_PATH)
    _edit_order(by_key, order_with_pcihack if action == "add" else order_without_pcihack, action, done)
    return done


def _edit_order(by_key: dict[bytes, Entry], edit: Callable[[str], str], action: Action,
                done: _Changes) -> None:
    order = by_key.get(ORDER_PATH.encode())
    if action == "keep" or order is None or not order.isreg:
        return
    text = order.data.decode("utf-8", "surrogateescape")
    new = edit(text)
    if new != text:
        order.set_data(new.encode("utf-8", "surrogateescape"))
        done.changed.append(ORDER_PATH)


def _add(entries: list[Entry], by_key: dict[bytes, Entry], done: _Changes) -> None:
    """Add the script (and init-bottom when missing)."""
    scripts_dir = by_key.get(b"scripts")
    if scripts_dir is None or not scripts_dir.isdir:
        if any(e.key.startswith((b"usr/lib/dracut", b"lib/dracut")) for e in entries):
            raise InitrdError("unsupported initrd: it looks like a dracut initrd "
                              "(no scripts/ directory); only initramfs-tools is supported")
        raise InitrdError("not an initramfs-tools initrd: no scripts/ directory in it")
    prefix = scripts_dir.name[: len(scripts_dir.name) - len(b"scripts")]
    epoch = _source_date_epoch()
    mtime = epoch if epoch is not None else max(e.mtime for e in entries)
    next_ino = max(e.inode[2] for e in entries) + 1
    added, changed = done.added, done.changed

    bottom = by_key.get(b"scripts/init-bottom")
    if bottom is None:
        bottom = archive.new_entry(prefix + b"scripts/init-bottom", S_IFDIR | 0o755, b"",
                            like=scripts_dir, ino=next_ino, mtime=mtime, nlink=2)
        next_ino += 1
        entries.append(bottom)
        added.append("scripts/init-bottom")

    script = by_key.get(PCIHACK_PATH.encode())
    if script is not None and not script.isreg:
        entries.remove(script)
        script = None
        changed.append(PCIHACK_PATH)
    if script is None:
        entries.append(archive.new_entry(prefix + PCIHACK_PATH.encode(), S_IFREG | 0o755,
                                  PCIHACK_SCRIPT, like=bottom, ino=next_ino, mtime=mtime,
                                  nlink=1))
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


def _conf_modules(entries: Iterable[Entry]) -> tuple[str, ...]:
    """The module names in conf/modules (from /etc/initramfs-tools/modules)."""
    for entry in entries:
        if entry.key == b"conf/modules" and entry.isreg:
            lines = entry.data.decode("utf-8", "replace").splitlines()
            return tuple(line.split()[0] for line in lines
                         if line.strip() and not line.lstrip().startswith("#"))
    return ()


def repack(data: bytes, *, compression: str | None = None, threads: int = 2,
           action: Action = "add") -> tuple[bytes, RepackResult]:
    """Return the initrd with pcihack added (or removed, or left as it is:
    `action`), and what was done.

    Early uncompressed segments are kept byte for byte and first; the main
    segment is rewritten as newc, sorted, with every header field kept.
    `threads` is the zstd worker count (fixed, for reproducible bytes).
    """
    if compression is not None and compression not in COMPRESSIONS:
        raise InitrdError(f"unknown initrd compression {compression!r}",
                          hint=f"choose one of {', '.join(COMPRESSIONS)}")
    if threads < 0:
        raise InitrdError(f"zstd thread count must be 0 or more, not {threads}")
    split = cpio.split(data)
    entries = archive.read_main(split)
    if not entries:
        raise InitrdError("not an initramfs-tools initrd: its main cpio segment is empty")
    done = _apply(entries, action)
    out_compression = compression or split.compression
    applied = not done.added and not done.changed and not done.removed
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
        pcihack=action,
        added=tuple(done.added),
        changed=tuple(done.changed),
        removed=tuple(done.removed),
        already_applied=applied,
        module_versions=_module_versions(entries),
        conf_modules=_conf_modules(entries),
        input_bytes=len(data),
        output_bytes=len(out),
        module_files=tuple(e.key.decode("utf-8", "replace") for e in entries
                           if e.isreg and b"/modules/" in e.key and b".ko" in e.key),
    )
    return out, result


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

