"""The modules payload's two ways into the guest give the same tree: a tree
sent as a tar through tar_in, and the same tree as an ext2 image on an extra
read-only drive copied inside the appliance (Guest.copy_tree), in one
launch, entry by entry (type, mode, owner, size, whole-second mtime, link
count, symlink target; the top directory too), read back through
libguestfs's own calls. Two trees, one with hard links. Plus the pure parts:
the image's size, and an image built by an unprivileged user."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from support import NOBODY, nobody_dir
from vsaimage import cancel
from vsaimage.guest import appliance
from vsaimage.guest.appliance import Partition
from vsaimage.kmod import payload
from vsaimage.model import Drive

VERSION = "6.1.0-test"
OWNED = 1234, 4321
MTIME = 978_307_200  # 2001-01-01


def _tree(root: Path, *, hard_links: bool) -> Path:
    """A modules tree of small, odd entries: modes 0600/0750, an entry
    owned by someone else, 2001 mtimes, relative symlinks in the tree and
    out of it (left out), a fifo (left out)."""
    files = {
        "modules.dep": b"kernel/drivers/block/a.ko:\n",
        "kernel/drivers/block/a.ko": os.urandom(300_000),
        "kernel/drivers/net/b.ko": os.urandom(200_000),
        "kernel/drivers/net/c.ko": os.urandom(100_000),
        "kernel/fs/ext4/ext4.ko": os.urandom(20_000),
        "kernel/private.ko": b"secret",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "kernel/private.ko").chmod(0o600)
    (root / "kernel/fs").chmod(0o750)
    os.chown(root / "kernel/fs/ext4/ext4.ko", *OWNED)
    (root / "kernel/drivers/net/alias.ko").symlink_to("b.ko")
    (root / "build").symlink_to("/usr/src/linux-headers-test")
    os.mkfifo(root / "fifo")
    if hard_links:
        os.link(root / "kernel/drivers/net/c.ko", root / "kernel/drivers/c-again.ko")
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames, ""]:
            os.utime(Path(dirpath) / name, (MTIME, MTIME), follow_symlinks=False)
    return root


def _listing(g: Any, top: str) -> dict[str, tuple[object, ...]]:
    """`top` ("") and every entry under it: (mode, uid, gid, size of a
    file, mtime, link count, symlink target), by its path below `top`."""
    out: dict[str, tuple[object, ...]] = {}
    for name in ["", *sorted(n.lstrip("/") for n in g.find(top))]:
        path = f"{top}/{name}" if name else top
        st = g.lstatns(path)
        mode = st["st_mode"]
        out[name] = (oct(mode), st["st_uid"], st["st_gid"], st["st_size"] if stat.S_ISREG(mode) else None,
                     st["st_mtime_sec"], st["st_nlink"] if stat.S_ISREG(mode) else None,
                     g.readlink(path) if stat.S_ISLNK(mode) else None)
    return out


@pytest.mark.integration
def test_image_and_tar_give_the_same_tree(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(64 * 2**20)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", str(disk)], check=True)
    trees, tars, images = {}, {}, {}
    for name, links in (("linked", True), ("plain", False)):
        trees[name] = _tree(tmp_path / name, hard_links=links)
        tars[name] = payload.build_payload(trees[name], VERSION, tmp_path / f"{name}.tar")
        images[name] = tmp_path / f"{name}.ext2"
        with images[name].open("wb") as f:
            f.truncate(payload.image_size(trees[name]))
    drives = [Drive(str(disk), readonly=False), *(Drive(str(i), readonly=True) for i in images.values())]

    class Quiet:
        def debug(self, _text: str) -> None: ...
        def warn(self, _text: str) -> None: ...

    g = appliance.launch(drives, Quiet())  # type: ignore[arg-type]
    built = {name: payload.build_image(trees[name], VERSION, images[name]) for name in images}
    progress: dict[str, list[int]] = {}
    reads: dict[str, int] = {}
    with g:
        devices = g.devices()
        g.mount(Partition(0, devices[0], 0, 0, None, "ext4", "", ""), writable=True)
        for n, (name, p) in enumerate(built.items()):
            g.tar_in(tars[name].file, f"/tar/{name}")
            progress[name] = []
            before = appliance._qemu_reads(cancel.qemu_children())
            g.copy_tree(devices[n + 1], f"/image/{name}", p.bytes, progress[name].append)
            reads[name] = appliance._qemu_reads(cancel.qemu_children()) - before
        listings = {(route, name): _listing(g.g, f"/{route}/{name}")
                    for route in ("tar", "image") for name in built}
        tops = {route: g.g.ls(f"/{route}") for route in ("tar", "image")}
    for name, p in built.items():
        tar, image = listings["tar", name], listings["image", name]
        # the top as on the host (the tar holds no entry for it: tar_in
        # leaves it as made), every entry below as the tar gives it
        assert image.pop("")[:5] == (oct(0o40755), 0, 0, None, MTIME)
        del tar[""]
        assert image == tar, sorted(set(image.items()) ^ set(tar.items()))
        assert {"build", "fifo"}.isdisjoint(image) and "kernel/drivers/net/alias.ko" in image
        assert image["kernel/fs/ext4/ext4.ko"][1:3] == (0, 0), "not owned by root"
        assert (p.files, p.bytes, p.dropped) == (tars[name].files, tars[name].bytes, tars[name].dropped)
        # progress: every byte at the end, never back; what it estimates
        # from, qemu's reads, holds at least the tree's bytes
        assert progress[name][-1] == p.bytes and progress[name] == sorted(progress[name])
        assert reads[name] >= p.bytes, (name, reads[name], p.bytes)
    assert listings["image", "linked"]["kernel/drivers/c-again.ko"][5] == 2
    # nothing of the copy's own left beside the trees
    assert tops == {"tar": ["linked", "plain"], "image": ["linked", "plain"]}


def test_image_size_holds_the_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t", hard_links=False)
    size = payload.image_size(root)
    assert size % 2**20 == 0 and size > sum(f.stat().st_size for f in root.rglob("*.ko"))


def test_transport_is_chosen_by_size() -> None:
    assert payload.transport(minimal=False) == "image"
    assert payload.transport(minimal=True) == "tar"


def test_image_built_unprivileged_is_root_owned() -> None:
    """A user's own tree, imaged by that user (no root): every entry of the
    image is owned by root, as tar_in's members are."""
    d = nobody_dir() / f"unprivileged-image-{os.getpid()}"
    d.mkdir()
    tree = _tree(d / "t", hard_links=True)
    for path in [d, *d.rglob("*")]:
        os.lchown(path, NOBODY, NOBODY)
    image = d / "m.ext2"
    with image.open("wb") as f:
        f.truncate(payload.image_size(tree))
    os.chown(image, NOBODY, NOBODY)
    build = (f"from pathlib import Path; from vsaimage.kmod import payload; "
             f"payload.build_image(Path({str(tree)!r}), {VERSION!r}, Path({str(image)!r}))")
    r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                        sys.executable, "-c", build], capture_output=True, text=True,
                       env={**os.environ, "HOME": str(d), "TMPDIR": str(d)})
    assert r.returncode == 0, r.stderr
    for name in ("/", "/kernel", "/kernel/fs/ext4/ext4.ko", "/kernel/drivers/c-again.ko",
                 "/kernel/drivers/net/alias.ko"):
        st = subprocess.run(["debugfs", "-R", f"stat {name}", str(image)], capture_output=True,
                            text=True).stdout
        owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", st)
        assert owner is not None and owner.groups() == ("0", "0"), f"{name}: {st[:200]}"
