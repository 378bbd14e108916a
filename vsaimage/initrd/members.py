"""The members of an initrd's main segment as the repack sees them.

A scan indexes every header by key (a later duplicate wins, as in the
kernel) and keeps the content of the few small files the edits read; the
edits queue their changes (new content, removals, new members); write()
streams the segment once more into the output with those changes applied,
so no more than those small files is ever held in memory. The output keeps
the input's order, each new member right after its parent directory: the
same input gives the same bytes without sorting, directories still precede
their contents, and hardlink groups keep their data on the link that had it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from pathlib import Path

from vsaimage.errors import InitrdError
from vsaimage.initrd.archive import S_IFDIR, S_IFMT, Header, Segment, Writer


class Members:
    """The index of a main segment, and the changes queued for its rewrite.
    New members are made alike: owned by root, one mtime, fresh inode
    numbers, and the archive's name style (`./` or not)."""

    def __init__(self, segment: Segment, headers: dict[bytes, Header], texts: dict[bytes, bytes],
                 count: int, mtime: int) -> None:
        self.segment = segment
        self.mtime = mtime
        self.count = count  # members the output will have
        self._index = headers
        self._texts = texts  # content of the scanned small files, and of every change
        self._removed: set[bytes] = set()
        self._new: dict[bytes, list[bytes]] = {}  # parent key -> new members' keys, in order
        self._added: set[bytes] = set()
        self._changed: set[bytes] = set()
        self._next_ino = max((h.inode[2] for h in headers.values()), default=0) + 1
        named = next((h for h in headers.values() if h.key), None)
        self.prefix = named.name[: len(named.name) - len(named.key)] if named else b""
        self.first = next(iter(headers.values()))

    @classmethod
    def scan(cls, segment: Segment, wanted: Iterable[bytes], epoch: int | None) -> Members | None:
        """Read the segment's headers, and the content of the `wanted` keys;
        None when it has no members. `epoch` is the mtime of new members
        (else the newest in the segment)."""
        keep = frozenset(wanted)
        headers: dict[bytes, Header] = {}
        texts: dict[bytes, bytes] = {}
        count = 0
        with segment.reading() as reader:
            for header in reader:
                count += 1
                key = header.key
                headers[key] = header
                texts.pop(key, None)
                if key in keep and header.isreg:
                    texts[key] = reader.read(header)
        if not headers:
            return None
        newest = max(h.mtime for h in headers.values())
        return cls(segment, headers, texts, count, epoch if epoch is not None else newest)

    def copy(self) -> Members:
        """An index of the same segment whose changes are its own (headers
        cloned): a repack that adds drivers for one image edits a copy, and
        the read every image plans from stays as read."""
        twin = copy.copy(self)
        twin._index = {key: h.clone() for key, h in self._index.items()}
        twin._texts, twin._removed = dict(self._texts), set(self._removed)
        twin._new = {parent: list(keys) for parent, keys in self._new.items()}
        twin._added, twin._changed = set(self._added), set(self._changed)
        twin.first = twin._index.get(self.first.key, self.first)
        return twin

    def get(self, key: bytes) -> Header | None:
        return self._index.get(key)

    def text(self, key: bytes) -> bytes | None:
        """The content of a small member the scan kept, or of a changed or new one."""
        return self._texts.get(key)

    def __iter__(self) -> Iterator[bytes]:
        """The members' keys."""
        return iter(self._index)

    def headers(self) -> Iterator[Header]:
        return iter(self._index.values())

    def add(self, key: bytes, mode: int, data: bytes = b"", *, like: Header) -> Header:
        """A new member `key` (a directory's nlink is 2), on `like`'s device,
        written right after its parent directory."""
        header = Header.new(self.prefix + key, mode, like=like, ino=self._next_ino,
                            mtime=self.mtime, nlink=2 if mode & S_IFMT == S_IFDIR else 1)
        self._next_ino += 1
        self._index[key] = header
        self._texts[key] = data
        self._added.add(key)
        self._new.setdefault(key.rpartition(b"/")[0], []).append(key)
        self.count += 1
        return header

    def set_data(self, key: bytes, data: bytes) -> None:
        self._texts[key] = data
        if key not in self._added:
            self._changed.add(key)

    def set_mode(self, key: bytes, mode: int) -> None:
        self._index[key].set_mode(mode)
        if key not in self._added:
            self._changed.add(key)

    def remove(self, key: bytes) -> None:
        del self._index[key]
        self._texts.pop(key, None)
        self._removed.add(key)
        self._changed.discard(key)
        self.count -= 1

    def extract(self, prefix: bytes, top: Path) -> dict[str, bytes]:
        """Write the regular members under `prefix` that sit in a
        subdirectory of it to `top` (as the segment now has them), and return
        the contents of those directly in it."""
        direct: dict[str, bytes] = {}

        def target(rel: str) -> Path:
            # The names come from the initrd: none may lead out of `top`.
            if any(part in ("", ".", "..") for part in rel.split("/")):
                raise InitrdError(f"unsafe name in the initrd: {rel!r} under {prefix.decode()!r}")
            (top / rel).parent.mkdir(parents=True, exist_ok=True)
            return top / rel

        with self.segment.reading() as reader:
            for header in reader:
                key = header.key
                if not header.isreg or not key.startswith(prefix) or key in self._removed:
                    continue
                rel = key[len(prefix):].decode("utf-8", "surrogateescape")
                data = self._texts.get(key)
                if "/" not in rel:
                    direct[rel] = data if data is not None else reader.read(header)
                elif data is not None:
                    target(rel).write_bytes(data)
                else:
                    with target(rel).open("wb") as f:
                        reader.copy_to(header, f)
        for key in self._added:
            if self._index[key].isreg and key.startswith(prefix):
                rel = key[len(prefix):].decode("utf-8", "surrogateescape")
                if "/" not in rel:
                    direct[rel] = self._texts[key]
                else:
                    target(rel).write_bytes(self._texts[key])
        return direct

    def write(self, writer: Writer) -> None:
        """The segment with the queued changes, in its own order."""
        pending = {parent: list(keys) for parent, keys in self._new.items()}

        def after(key: bytes) -> None:
            for new in pending.pop(key, ()):
                writer.add(self._index[new], self._texts[new])
                after(new)

        after(b"")
        with self.segment.reading() as reader:
            for header in reader:
                key = header.key
                if key in self._removed:
                    continue
                if key in self._changed:
                    header.set_mode(self._index[key].mode)
                    writer.add(header, self._texts[key])
                else:
                    writer.copy(header, reader)
                after(key)
        assert not pending, "every new member's parent is in the segment or new"
