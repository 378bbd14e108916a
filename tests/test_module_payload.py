"""module_payload.py and module_selection.py: the modules payload, on the installed Debian kernel's tree and
on small crafted trees; closure() as a pure function."""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import DebianKernel
from vsaimage.errors import BadInput
from vsaimage.kmod import payload as module_payload
from vsaimage.kmod.payload import ModulePayload, build_payload, measure
from vsaimage.kmod.selection import MINIMAL_MODULES, closure


def members(tarball: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tarball) as tar:
        return {m.name: m for m in tar.getmembers()}


def on_disk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """The tree as os.walk sees it: directories and regular files, no symlinks."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if not stat.S_ISLNK(st.st_mode):
                yield str(path.relative_to(root)), st


def timed(kernel: DebianKernel, label: str, **kwargs: object) -> ModulePayload:
    start = time.perf_counter()
    payload = build_payload(kernel.modules, kernel.version, **kwargs)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    print(
        f"\n{label}: {payload.files} files, {payload.bytes / 1e6:.1f} MB of files,"
        f" tar {payload.file.stat().st_size / 1e6:.1f} MB, built in {elapsed:.2f} s"
    )
    return payload


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory,
         debian_kernel: DebianKernel) -> Iterator[ModulePayload]:
    # ~400 MB: written once for the whole file, removed afterwards.
    dest = tmp_path_factory.mktemp("full") / "modules.tar"
    yield timed(debian_kernel, "full payload", dest=dest)
    dest.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def minimal(tmp_path_factory: pytest.TempPathFactory,
            debian_kernel: DebianKernel) -> ModulePayload:
    dest = tmp_path_factory.mktemp("minimal") / "modules.tar"
    return timed(debian_kernel, "minimal payload", dest=dest, minimal=True)


# --- the installed kernel ---------------------------------------------------


def test_full_payload_is_the_tree(full: ModulePayload, debian_kernel: DebianKernel) -> None:
    got = members(full.file)
    want = dict(on_disk(debian_kernel.modules))
    assert sorted(got) == sorted(want)
    for name, info in got.items():
        st = want[name]
        assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "root", "root"), name
        assert info.mode == stat.S_IMODE(st.st_mode), name
        assert info.mtime == int(st.st_mtime), name
        if stat.S_ISDIR(st.st_mode):
            assert info.isdir(), name
        else:
            assert (info.isreg() or info.islnk()) and info.size in (st.st_size, 0), name
    assert not full.minimal
    assert full.version == debian_kernel.version
    assert full.files == sum(1 for i in got.values() if i.isreg())
    assert full.bytes == sum(i.size for i in got.values() if i.isreg())
    assert full.modules == sum(1 for n, i in got.items() if i.isreg() and ".ko" in n)
    assert "modules.dep" in got


def test_full_payload_listing_with_tar(full: ModulePayload, debian_kernel: DebianKernel) -> None:
    # A second reader: GNU tar itself, as the appliance will run it.
    out = subprocess.run(
        ["tar", "--numeric-owner", "-tvf", str(full.file)],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert len(out) == sum(1 for _ in on_disk(debian_kernel.modules))
    assert all(line.split()[1] == "0/0" for line in out)


def test_minimal_payload(full: ModulePayload, minimal: ModulePayload,
                         debian_kernel: DebianKernel) -> None:
    assert minimal.minimal
    assert minimal.bytes < full.bytes * 0.05
    got = members(minimal.file)
    assert all((i.uid, i.gid) == (0, 0) for i in got.values())

    dep = (debian_kernel.modules / "modules.dep").read_text()
    wanted = [n for n in MINIMAL_MODULES if n not in minimal.absent]
    needed = closure(dep, wanted)
    assert needed
    assert needed <= set(got)
    assert minimal.modules == sum(1 for n in got if ".ko" in n)

    with tarfile.open(minimal.file) as tar:
        f = tar.extractfile("modules.dep")
        assert f is not None
        new_dep = f.read().decode()
    listed = {line.split(":")[0] for line in new_dep.splitlines()}
    assert any(p.endswith("/xen-blkfront.ko") or "/xen-blkfront.ko." in p for p in listed)
    assert needed <= listed


def test_minimal_absent_names(minimal: ModulePayload) -> None:
    # jbd and rd are long gone from Linux; ext3 and rd are aliases of ext4 and
    # brd, so only jbd should be missing from a current kernel.
    assert set(minimal.absent) <= {"jbd", "rd", "ext3"}
    for name in ("xen_blkfront", "xen_netfront", "ext4", "jbd2", "md_mod", "raid0", "raid1"):
        assert name not in minimal.absent


def test_minimal_tree_serves_rc_drivers(minimal: ModulePayload, tmp_path: Path,
                                        debian_kernel: DebianKernel) -> None:
    # What rc.drivers runs in the guest must resolve in the shipped tree alone.
    target = tmp_path / "lib" / "modules" / debian_kernel.version
    target.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(minimal.file), "-C", str(target)], check=True)
    for name in ("xen_blkfront", "xen_netfront", "ext3", "rd", "md", "raid0", "raid1"):
        proc = subprocess.run(
            ["/usr/sbin/modprobe", "-d", str(tmp_path), "-S", debian_kernel.version,
             "--show-depends", name],
            capture_output=True, text=True, check=False,
        )
        assert proc.returncode == 0, (name, proc.stderr)
        for line in proc.stdout.splitlines():
            if line.startswith("insmod "):
                assert line.split()[1].startswith(str(target)), line


def test_minimal_is_reproducible(minimal: ModulePayload, tmp_path: Path,
                                 debian_kernel: DebianKernel) -> None:
    again = build_payload(debian_kernel.modules, debian_kernel.version, tmp_path / "again.tar",
                          minimal=True)
    assert again.file.read_bytes() == minimal.file.read_bytes()


def test_extra_modules(tmp_path: Path, debian_kernel: DebianKernel) -> None:
    builtin_first = (debian_kernel.modules / "modules.builtin").read_text().split()[0]
    builtin_name = Path(builtin_first).name.removesuffix(".ko")
    payload = build_payload(
        debian_kernel.modules, debian_kernel.version, tmp_path / "m.tar", minimal=True,
        extra_modules=["dm-mod", "loop max_loop=8", "# a comment", "", builtin_name, "no_such"],
    )
    names = {Path(n).name for n in members(payload.file)}
    assert {"dm-mod.ko", "loop.ko"} <= {n.split(".ko")[0] + ".ko" for n in names}
    assert payload.builtin == (builtin_name,)
    assert "no_such" in payload.absent


# --- crafted trees ----------------------------------------------------------


def craft_tree(root: Path) -> Path:
    tree = root / "6.9.9-test"
    (tree / "kernel" / "fs").mkdir(parents=True)
    (tree / "kernel" / "fs" / "a.ko").write_bytes(b"A" * 100)
    (tree / "kernel" / "fs" / "b-c.ko.xz").write_bytes(b"B" * 50)
    (tree / "kernel" / "fs" / "a.ko").chmod(0o600)
    (tree / "modules.dep").write_text("kernel/fs/a.ko: kernel/fs/b-c.ko.xz\nkernel/fs/b-c.ko.xz:\n")
    (tree / "build").symlink_to("/usr/src/linux-headers-6.9.9-test")
    (tree / "source").symlink_to("../../../usr/src/linux")
    (tree / "kernel" / "same.ko").symlink_to("fs/a.ko")
    os.mkfifo(tree / "fifo")
    if os.geteuid() == 0:
        for path in [tree, *tree.rglob("*")]:
            os.lchown(path, 1234, 1234)
    return tree


def test_crafted_full_tree(tmp_path: Path) -> None:
    tree = craft_tree(tmp_path / "src")
    payload = build_payload(tree, "6.9.9-test", tmp_path / "out.tar")
    got = members(payload.file)
    assert list(got) == [
        "kernel", "kernel/fs", "kernel/fs/a.ko", "kernel/fs/b-c.ko.xz", "kernel/same.ko",
        "modules.dep",
    ]
    assert all((i.uid, i.gid, i.uname, i.gname) == (0, 0, "root", "root") for i in got.values())
    assert got["kernel/fs/a.ko"].mode == 0o600
    assert got["kernel/same.ko"].issym() and got["kernel/same.ko"].linkname == "fs/a.ko"
    assert payload.dropped == ("build", "fifo", "source")
    assert (payload.files, payload.bytes, payload.modules) == (3, 100 + 50 + len(
        (tree / "modules.dep").read_bytes()), 2)


def test_hard_link_is_one_file(tmp_path: Path) -> None:
    # the tar holds a second link as a link, not its bytes again: counted
    # once by the payload and by measure(), which the room check uses
    tree = craft_tree(tmp_path / "src")
    os.link(tree / "kernel/fs/a.ko", tree / "kernel/a-again.ko")
    payload = build_payload(tree, "6.9.9-test", tmp_path / "out.tar")
    got = members(payload.file)
    assert [got[n].islnk() for n in ("kernel/a-again.ko", "kernel/fs/a.ko")] == [False, True]
    assert (payload.files, payload.bytes) == (3, 100 + 50 + len((tree / "modules.dep").read_bytes()))
    size = measure(tree, "6.9.9-test")
    assert (size.files, size.bytes, size.dirs) == (payload.files, payload.bytes, payload.dir_count)


def test_crafted_full_tree_reproducible(tmp_path: Path) -> None:
    tree = craft_tree(tmp_path / "src")
    a = build_payload(tree, "6.9.9-test", tmp_path / "a.tar")
    b = build_payload(tree, "6.9.9-test", tmp_path / "b.tar")
    assert a.file.read_bytes() == b.file.read_bytes()


def test_missing_modules_dir(tmp_path: Path) -> None:
    missing = tmp_path / "lib" / "modules" / "1.2.3"
    with pytest.raises(BadInput) as exc:
        build_payload(missing, "1.2.3", tmp_path / "out.tar")
    assert str(missing) in exc.value.message
    assert exc.value.hint is not None and "--modules-dir" in exc.value.hint
    assert not (tmp_path / "out.tar").exists()


@pytest.mark.parametrize("version", ["", "..", "6.1/../../etc"])
def test_bad_version(tmp_path: Path, version: str) -> None:
    tree = craft_tree(tmp_path / "src")
    with pytest.raises(BadInput, match="bad kernel version"):
        build_payload(tree, version, tmp_path / "out.tar", minimal=True)


def test_no_modules_dep(tmp_path: Path) -> None:
    tree = craft_tree(tmp_path / "src")
    (tree / "modules.dep").unlink()
    with pytest.raises(BadInput, match=r"modules\.dep"):
        build_payload(tree, "6.9.9-test", tmp_path / "out.tar", minimal=True)
    assert not (tmp_path / "out.tar").exists()


def test_dep_naming_a_missing_file(tmp_path: Path) -> None:
    tree = craft_tree(tmp_path / "src")
    (tree / "modules.dep").write_text("kernel/fs/gone.ko:\n")
    with pytest.raises(BadInput, match=r"gone\.ko"):
        build_payload(tree, "6.9.9-test", tmp_path / "out.tar", minimal=True,
                      extra_modules=["gone"])
    assert not (tmp_path / "out.tar").exists()


def test_failure_half_way_leaves_no_tarball(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = craft_tree(tmp_path / "src")
    real_walk = module_payload._walk

    def failing_walk(root: Path, rel: str = "") -> Iterator[tuple[str, Path, os.stat_result]]:
        for n, entry in enumerate(real_walk(root, rel)):
            if n == 3:
                raise OSError(5, "Input/output error")
            yield entry

    monkeypatch.setattr(module_payload, "_walk", failing_walk)
    with pytest.raises(OSError):
        build_payload(tree, "6.9.9-test", tmp_path / "out.tar")
    assert not (tmp_path / "out.tar").exists()


# --- closure(), pure ----------------------------------------------------------

DEP = """\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/lib/crc16.ko:
kernel/drivers/block/xen-blkfront.ko.xz:
kernel/drivers/md/raid1.ko.zst: kernel/drivers/md/md-mod.ko
kernel/drivers/md/md-mod.ko:
kernel/x/loop_a.ko: kernel/x/loop_b.ko
kernel/x/loop_b.ko: kernel/x/loop-a.ko kernel/x/loop_c.ko
kernel/x/loop_c.ko: kernel/x/loop_a.ko
kernel/unrelated.ko: kernel/lib/crc16.ko
"""


def test_closure_follows_dependencies() -> None:
    assert closure(DEP, ["ext4"]) == {
        "kernel/fs/ext4/ext4.ko", "kernel/lib/crc16.ko", "kernel/fs/mbcache.ko",
        "kernel/fs/jbd2/jbd2.ko",
    }


def test_closure_normalises_names() -> None:
    # '-' and '_' are the same to modprobe, and any module suffix is dropped.
    assert closure(DEP, ["xen_blkfront"]) == {"kernel/drivers/block/xen-blkfront.ko.xz"}
    assert closure(DEP, ["xen-blkfront.ko"]) == {"kernel/drivers/block/xen-blkfront.ko.xz"}
    assert closure(DEP, ["raid1"]) == {
        "kernel/drivers/md/raid1.ko.zst", "kernel/drivers/md/md-mod.ko"
    }
    assert closure(DEP, ["md_mod"]) == {"kernel/drivers/md/md-mod.ko"}


def test_closure_survives_cycles() -> None:
    # loop_b names loop-a, which modules.dep spells loop_a: still the same module.
    expected = {"kernel/x/loop_a.ko", "kernel/x/loop_b.ko", "kernel/x/loop_c.ko"}
    assert closure(DEP, ["loop_c"]) == expected
    assert closure(DEP, ["loop-a", "loop_b"]) == expected


def test_closure_ignores_unknown_and_empty() -> None:
    assert closure(DEP, ["jbd", "rd"]) == set()
    assert closure(DEP, []) == set()
    assert closure("", ["ext4"]) == set()


def test_closure_absolute_paths() -> None:
    # How depmod wrote modules.dep before Linux 2.6.3x.
    dep = (
        "/lib/modules/2.6.18/kernel/fs/ext3/ext3.ko: /lib/modules/2.6.18/kernel/fs/jbd/jbd.ko\n"
        "/lib/modules/2.6.18/kernel/fs/jbd/jbd.ko:\n"
    )
    assert closure(dep, ["ext3"]) == {
        "/lib/modules/2.6.18/kernel/fs/ext3/ext3.ko", "/lib/modules/2.6.18/kernel/fs/jbd/jbd.ko"
    }


def test_measure_counts_what_the_payloads_hold(full: ModulePayload, minimal: ModulePayload,
                                               debian_kernel: DebianKernel) -> None:
    """The room check's sizes are the payloads' own, measured without
    writing a tarball."""
    got = measure(debian_kernel.modules, debian_kernel.version)
    assert (got.files, got.bytes, got.dirs) == (full.files, full.bytes, full.dir_count)
    small = measure(debian_kernel.modules, debian_kernel.version, minimal=True)
    assert (small.files, small.bytes, small.dirs) == (minimal.files, minimal.bytes, minimal.dir_count)
    tar_dirs = sum(1 for m in members(full.file).values() if not m.isreg())
    assert full.dir_count == tar_dirs
    assert got.need(4096) >= got.bytes + got.files * 4096 and got.inodes == got.files + got.dirs
