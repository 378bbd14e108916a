"""Which entry pygrub boots from a disk image, told on the host without Xen.

Runs Debian's pygrub (extracted by `make setup`, see fixtures/debs.py) under
the host's python 3.11, which is the package's, on the image file. pygrub's
`--not-really` prints no kernel path (Xen 4.17 prints "kernel None"), and its
`--list-entries` does not say which entry it picks: so its own functions are
called, as its command line does without `--entry`, and the kernel and
ramdisk it would copy out are read and hashed instead. xenfsimage opens the
image read-only: nothing is written.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fixtures import debs
from fixtures.build_image import default_cache

PYTHON = "/usr/bin/python3"
XEN = "usr/lib/xen-4.17"

# pygrub's main without curses: the partitions in its order, the first whose
# boot config names a kernel, the entry that config's default selects.
DRIVER = r"""
import hashlib, importlib.machinery, importlib.util, json, sys
path, image = sys.argv[1:]
loader = importlib.machinery.SourceFileLoader("pygrub", path)
pygrub = importlib.util.module_from_spec(importlib.util.spec_from_loader("pygrub", loader))
loader.exec_module(pygrub)
pygrub.list_entries, pygrub.interactive = False, False

def sha256(fs, name):
    if not name:
        return None
    f, h, offset = fs.open_file(name), hashlib.sha256(), 0
    while data := f.read(pygrub.FS_READ_MAX, offset):
        h.update(data)
        offset += len(data)
    return h.hexdigest()

for offset in pygrub.get_partition_offsets(image):
    try:
        fs = pygrub.xenfsimage.open(image, offset, "")
        chosen = pygrub.run_grub(image, None, fs, "")
    except Exception:
        continue
    if chosen["kernel"]:
        break
else:
    sys.exit("pygrub: no partition holds a boot config naming a kernel")
entries = [{"title": i.title, "kernel": i.kernel[1], "ramdisk": i.initrd[1] if i.initrd else None,
            "args": i.args or ""} for i in pygrub.g.cf.images]
print(json.dumps({"offset": offset, "config": pygrub.g.cf.filename, "index": pygrub.sel,
                  "entries": entries, "kernel_sha256": sha256(fs, chosen["kernel"]),
                  "ramdisk_sha256": sha256(fs, chosen["ramdisk"])}))
"""


@dataclass(frozen=True)
class Entry:
    title: str
    kernel: str  # paths on the boot filesystem
    ramdisk: str | None
    args: str


@dataclass(frozen=True)
class Choice:
    offset: int  # of the boot filesystem in the image, in bytes
    config: str  # the boot config pygrub read, e.g. /grub/grub.cfg
    entries: tuple[Entry, ...]
    index: int  # of the entry booted
    kernel_sha256: str  # of the bytes pygrub would hand Xen
    ramdisk_sha256: str | None

    @property
    def chosen(self) -> Entry:
        return self.entries[self.index]


def environment(tree: Path) -> dict[str, str]:
    """pygrub's python package, libxenfsimage and its plugins (found by
    XEN_FSIMAGE_FSDIR, else at their installed path) from the extracted tree."""
    lib = tree / XEN / "lib/x86_64-linux-gnu"
    return {**os.environ, "PYTHONPATH": str(tree / XEN / "lib/python"), "LD_LIBRARY_PATH": str(lib),
            "XEN_FSIMAGE_FSDIR": str(lib / "xenfsimage"), "PYTHONDONTWRITEBYTECODE": "1"}


def choose(image: Path) -> Choice:
    """The entry pygrub boots from `image` (a raw disk image) by default."""
    tree = debs.debian_root(default_cache())
    out = subprocess.run([PYTHON, "-c", DRIVER, str(tree / XEN / "bin/pygrub"), str(image)],
                         env=environment(tree), capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"pygrub on {image}: {out.stderr.strip()}")
    found = json.loads(out.stdout)
    return Choice(found["offset"], found["config"], tuple(Entry(**e) for e in found["entries"]),
                  found["index"], found["kernel_sha256"], found["ramdisk_sha256"])


if __name__ == "__main__":
    import sys

    choice = choose(Path(sys.argv[1]))
    print(json.dumps({"chosen": vars(choice.chosen), **vars(choice),
                      "entries": [vars(e) for e in choice.entries]}, indent=2))
