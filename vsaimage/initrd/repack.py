"""Repack an initramfs-tools initrd with the `bind` half of the PCI step:
add (or take out) `scripts/init-bottom/pcihack` and its ORDER line, add the
drivers it lacks to mount the root under Xen, and write the result back byte
for byte reproducible.

In two halves, so that convert can read the initrd while the appliance
boots and decide on the drivers once it knows the root filesystem: prepare()
reads it and applies pcihack, finish() adds the drivers and compresses.

The pieces: cpio.py splits the file into its segments, archive.py reads and
writes the main one through libarchive, members.py indexes it and rewrites it
in a streaming pass, edits/pcihack.py holds the script and the ORDER text
edit, modules.py the drivers. Early uncompressed segments are kept
byte for byte, first. Memory does not grow with the initrd: the input is
read from its file and the output written to its file, entry by entry.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import BinaryIO

from vsaimage.edits.pcihack import (
    ORDER_PATH,
    PCIHACK_PATH,
    PCIHACK_SCRIPT,
    Action,
    order_with_pcihack,
    order_without_pcihack,
)
from vsaimage.errors import InitrdError
from vsaimage.initrd import archive, cpio, mdadm
from vsaimage.initrd import modules as initrd_modules
from vsaimage.initrd.archive import S_IFDIR, S_IFREG, Header, Segment
from vsaimage.initrd.cpio import COMPRESSIONS
from vsaimage.initrd.members import Members

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
    """Put pcihack in (add) or take it out (remove)."""
    done = _Changes([], [], [])
    if action == "add":
        _add(members, done)
    elif action == "remove" and members.get(PCIHACK_PATH.encode()) is not None:
        members.remove(PCIHACK_PATH.encode())
        done.removed.append(PCIHACK_PATH)
    _edit_order(members, order_with_pcihack if action == "add" else order_without_pcihack, action, done)
    return done


def _edit_order(members: Members, edit: Callable[[str], str], action: Action,
                done: _Changes) -> None:
    key = ORDER_PATH.encode()
    order = members.get(key)
    if action == "keep" or order is None or not order.isreg:
        return
    text = (members.text(key) or b"").decode("utf-8", "surrogateescape")
    new = edit(text)
    if new != text:
        members.set_data(key, new.encode("utf-8", "surrogateescape"))
        done.changed.append(ORDER_PATH)


def _add(members: Members, done: _Changes) -> None:
    """Add the script (and init-bottom when missing)."""
    scripts_dir = members.get(b"scripts")
    if scripts_dir is None or not scripts_dir.isdir:
        if any(k.startswith((b"usr/lib/dracut", b"lib/dracut")) for k in members):
            raise InitrdError("unsupported initrd: it looks like a dracut initrd "
                              "(no scripts/ directory); only initramfs-tools is supported")
        raise InitrdError("not an initramfs-tools initrd: no scripts/ directory in it")
    added, changed = done.added, done.changed

    bottom = members.get(b"scripts/init-bottom")
    if bottom is None:
        bottom = members.add(b"scripts/init-bottom", S_IFDIR | 0o755, like=scripts_dir)
        added.append("scripts/init-bottom")

    key = PCIHACK_PATH.encode()
    script = members.get(key)
    if script is not None and not script.isreg:
        members.remove(key)
        script = None
        changed.append(PCIHACK_PATH)
    if script is None:
        members.add(key, S_IFREG | 0o755, PCIHACK_SCRIPT, like=bottom)
        if PCIHACK_PATH not in changed:
            added.append(PCIHACK_PATH)
    elif members.text(key) != PCIHACK_SCRIPT or script.mode != S_IFREG | 0o755:
        members.set_data(key, PCIHACK_SCRIPT)
        members.set_mode(key, S_IFREG | 0o755)
        changed.append(PCIHACK_PATH)


def _name_array(members: Members, line: str, done: _Changes) -> None:
    """mdadm.conf names the root's array (mdadm.py)."""
    key = mdadm.CONF.encode()
    conf = members.get(key)
    if conf is not None and not conf.isreg:
        raise InitrdError(f"cannot name the root's md array: {mdadm.CONF} in the initrd is not a file")
    text = (members.text(key) or b"").decode("utf-8", "surrogateescape")
    new = mdadm.with_array(text, line).encode("utf-8", "surrogateescape")
    if conf is None:
        added: list[str] = []
        members.add(key, S_IFREG | 0o644, new,
                    like=initrd_modules.directory(members, mdadm.CONF.rpartition("/")[0], added))
        done.added += [*added, mdadm.CONF]
    elif new != members.text(key):
        members.set_data(key, new)
        done.changed.append(mdadm.CONF)


def _module_versions(keys: Iterable[bytes]) -> tuple[str, ...]:
    found = set()
    for key in keys:
        match = _MODULES_RE.match(key)
        if match:
            found.add(match.group(1).decode("utf-8", "replace"))
    return tuple(sorted(found))


def _conf_modules(members: Members) -> tuple[str, ...]:
    """The module names in conf/modules: what init loads at boot."""
    key = initrd_modules.CONF_MODULES.encode()
    conf = members.get(key)
    if conf is None or not conf.isreg:
        return ()
    return initrd_modules.listed((members.text(key) or b"").decode("utf-8", "replace"))


def _module_files(headers: Iterable[Header]) -> tuple[str, ...]:
    return tuple(h.key.decode("utf-8", "replace") for h in headers
                 if h.isreg and b"/modules/" in h.key and b".ko" in h.key)


# The small members the edits read: their content is kept by the scan.
_READ = (ORDER_PATH.encode(), PCIHACK_PATH.encode(), initrd_modules.CONF_MODULES.encode(),
         mdadm.CONF.encode())


@dataclass
class Prepared:
    """An initrd read, with pcihack applied: the first half of a repack.
    finish() leaves it as it is (drivers are added to a copy), so one read
    serves every image of a batch. The input file stays open until then:
    finish() reads it again."""

    source: BinaryIO
    split: cpio.Split
    members: Members
    action: Action
    done: _Changes

    @property
    def module_files(self) -> tuple[str, ...]:
        """The kernel modules inside (paths), for initrd_drivers."""
        return _module_files(self.members.headers())

    @property
    def conf_modules(self) -> tuple[str, ...]:
        return _conf_modules(self.members)

    @property
    def done_nothing(self) -> bool:
        """pcihack was already as asked."""
        return self.done.none

    def module_root(self, version: str) -> str:
        return initrd_modules.module_root(self.members, version)


def _scan(source: BinaryIO) -> tuple[cpio.Split, Members]:
    split = cpio.split(source)
    epoch = _source_date_epoch()
    segment = Segment(source, split.main_offset, split.main_size, split.compression)
    try:
        members = Members.scan(segment, _READ, epoch)
    except InitrdError as error:
        # Some tools pad the whole file after a compressed segment; the kernel
        # skips the zeros but libarchive's zstd reader chokes on them.
        end = split.main_offset + split.main_size
        zeros = cpio.trailing_zeros(source, split.main_offset, end) if split.compression != "none" else 0
        if not zeros:
            raise
        try:
            members = Members.scan(Segment(source, split.main_offset, split.main_size - zeros,
                                           split.compression), _READ, epoch)
        except InitrdError:
            raise error from None
    if members is None:
        raise InitrdError("not an initramfs-tools initrd: its main cpio segment is empty")
    return split, members


def prepare(source: BinaryIO, *, action: Action = "add") -> Prepared:
    """Read the initrd open as `source` (its headers and the few small files
    the edits need) and put pcihack in (or take it out, or leave it:
    `action`)."""
    split, members = _scan(source)
    return Prepared(source, split, members, action, _apply(members, action))


def finish(prepared: Prepared, out: BinaryIO, *, compression: str | None = None,
           drivers: initrd_modules.Addition | None = None, md_array: str | None = None) -> RepackResult:
    """Add the `drivers` modules and the `md_array` line of mdadm.conf (the
    root's array: mdadm.py), and write the initrd to `out`; returns what was
    done.

    Early uncompressed segments are kept byte for byte and first; the main
    segment is rewritten as newc in its own order, with every header field
    kept.
    """
    if compression is not None and compression not in COMPRESSIONS:
        raise InitrdError(f"unknown initrd compression {compression!r}",
                          hint=f"choose one of {', '.join(COMPRESSIONS)}")
    done, split, members = prepared.done, prepared.split, prepared.members
    if drivers is not None or md_array is not None:
        members = members.copy()
        done = _Changes(list(done.added), list(done.changed), list(done.removed))
    if drivers is not None:
        added, changed = initrd_modules.add(members, drivers)
        done.added += added
        done.changed += changed
    if md_array is not None:
        _name_array(members, md_array, done)
    out_compression = compression or split.compression
    applied = done.none
    start = out.tell()
    if applied and out_compression == split.compression:
        # Nothing to change: the input is the answer (idempotent, byte for byte).
        prepared.source.seek(0)
        shutil.copyfileobj(prepared.source, out, archive.BUFFER)
    else:
        out.write(split.early)
        with archive.writing(out, out_compression) as writer:
            members.write(writer)
    return RepackResult(
        compression=out_compression,
        input_compression=split.compression,
        early_segments=split.early_segments,
        entries=members.count,
        pcihack=prepared.action,
        added=tuple(done.added),
        changed=tuple(done.changed),
        removed=tuple(done.removed),
        already_applied=applied,
        module_versions=_module_versions(members),
        conf_modules=_conf_modules(members),
        input_bytes=split.main_offset + split.main_size,
        output_bytes=out.tell() - start,
        module_files=_module_files(members.headers()),
    )


def repack(source: BinaryIO, out: BinaryIO, *, compression: str | None = None,
           action: Action = "add") -> RepackResult:
    """Write the initrd open as `source` to `out` with pcihack added (or
    removed, or left as it is: `action`), and return what was done; see
    finish()."""
    return finish(prepare(source, action=action), out, compression=compression)


def check(source: BinaryIO, action: Action = "add") -> bool:
    """Postcondition: pcihack is present (0755, our content) and listed in
    ORDER if any (add), or neither (remove); anything goes for keep."""
    if action == "keep":
        return True
    _, members = _scan(source)
    script = members.get(PCIHACK_PATH.encode())
    order = members.get(ORDER_PATH.encode())
    data = members.text(ORDER_PATH.encode()) if order is not None else None
    text = data.decode("utf-8", "surrogateescape") if data is not None else None
    if action == "remove":
        return script is None and (text is None or order_without_pcihack(text) == text)
    if script is None or not script.isreg or script.mode & 0o7777 != 0o755:
        return False
    return members.text(PCIHACK_PATH.encode()) == PCIHACK_SCRIPT and (
        text is None or order_with_pcihack(text) == text)
