"""initrd_modules.py: the repack adds the drivers an initrd lacks to mount the
root under Xen. Small initrds and a small modules tree built here (fake .ko
files: depmod lists them, without the dependencies it reads from real ones),
then the machine's Debian initrd with the drivers taken out, read back with
unmkinitramfs and checked with the machine's modprobe.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

import initrd_reader as rd
from support import DebianKernel, finish_bytes, prepare_bytes, repack_bytes
from vsaimage.commands import verify
from vsaimage.errors import InitrdError, VsaError
from vsaimage.initrd import modules as initrd_modules
from vsaimage.initrd import repack as initrd
from vsaimage.kmod.payload import build_payload

V = "6.1.0-99-amd64"
M = f"usr/lib/modules/{V}"
# A dependency chain (ext4 -> jbd2 -> crc32c), a dependency the initrd already
# has (crc16), compressed files kept as they are, modules nothing asks for.
DEP = """kernel/drivers/block/xen-blkfront.ko:
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz kernel/fs/mbcache.ko kernel/lib/crc16.ko
kernel/fs/jbd2/jbd2.ko.xz: kernel/lib/crc32c.ko
kernel/fs/mbcache.ko:
kernel/lib/crc32c.ko:
kernel/lib/crc16.ko:
kernel/fs/xfs/xfs.ko: kernel/lib/crc32c.ko
kernel/drivers/net/xen-netfront.ko:
"""
ADDED = ("kernel/drivers/block/xen-blkfront.ko", "kernel/fs/ext4/ext4.ko.xz",
         "kernel/fs/jbd2/jbd2.ko.xz", "kernel/fs/mbcache.ko", "kernel/lib/crc32c.ko")
DEPMOD_FILES = ("modules.dep", "modules.dep.bin", "modules.alias.bin", "modules.symbols.bin")


@pytest.fixture(autouse=True)
def _no_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


def ko(rel: str) -> bytes:
    """Distinct content per module, like the files of a tree."""
    return b"\x7fELF fake module " + rel.encode() + b"\n"


def make_tree(root: Path, dep: str = DEP, builtin: str = "kernel/fs/fat/fat.ko\n") -> Path:
    tree = root / V
    for line in dep.splitlines():
        rel = line.partition(":")[0]
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(ko(rel))
    (tree / "modules.dep").write_text(dep)
    (tree / "modules.builtin").write_text(builtin)
    (tree / "modules.alias").write_text("alias fs-ext3 ext4\nalias ext3 ext4\nalias fs-xfs xfs\n")
    (tree / "modules.order").write_text("".join(line.partition(":")[0] + "\n" for line in dep.splitlines()))
    return tree


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree")


def small(modules: tuple[str, ...] = ("kernel/lib/crc16.ko",), *, conf: bytes | None = b"raid1\n",
          root: str = M) -> list[rd.Member]:
    """An initramfs-tools initrd with `modules` (from the tree above) under
    `root`, merged /usr as bookworm's (lib is a link to usr/lib)."""
    m = rd.member
    members = [m(".", 0o040755, ino=1), m("conf", 0o040755, ino=2), m("scripts", 0o040755, ino=3),
               m("scripts/init-bottom", 0o040755, ino=4), m("usr", 0o040755, ino=5),
               m("usr/lib", 0o040755, ino=6), m("lib", 0o120777, b"usr/lib", ino=7)]
    if root.startswith("lib/"):
        members[-1] = m("lib", 0o040755, ino=7)
    parts = root.split("/")
    ino = 10
    for i in range(len(parts)):
        name = "/".join(parts[:i + 1])
        if name not in {x.name for x in members}:
            members.append(m(name, 0o040755, ino=ino))
            ino += 1
    dirs = sorted({f"{root}/{d}" for rel in modules for d in _parents(rel)})
    files = [(rel, ko(rel)) for rel in modules]
    files.append(("modules.dep", "".join(f"{rel}:\n" for rel in modules).encode()))
    files.append(("modules.builtin", b"kernel/fs/fat/fat.ko\n"))
    for name in dirs:
        members.append(m(name, 0o040755, ino=ino))
        ino += 1
    for rel, data in files:
        members.append(m(f"{root}/{rel}", 0o100644, data, ino=ino))
        ino += 1
    if conf is not None:
        members.append(m("conf/modules", 0o100644, conf, ino=ino))
    return members


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[:i + 1]) for i in range(len(parts))]


def gz(members: list[rd.Member]) -> bytes:
    c = zlib.compressobj(1, zlib.DEFLATED, 31)
    return c.compress(rd.write_newc(members)) + c.flush()


def repack(data: bytes, tree: Path, fstype: str = "ext3",
           ) -> tuple[bytes, initrd.RepackResult, initrd_modules.DriverPlan]:
    """What convert does: read, check against the tree, plan, finish."""
    prepared = prepare_bytes(data)
    found = initrd_modules.check(prepared.module_files, tree, fstype)
    plan = initrd_modules.plan(found, tree, V, prepared.module_root(V))
    out, result = finish_bytes(prepared, drivers=plan.addition)
    return out, result, plan


def by_name(data: bytes) -> dict[str, rd.Member]:
    return {m.name: m for m in rd.main_members(data)}


def extract(data: bytes, dest: Path) -> Path:
    """Directories and files of the main segment on disk (for modprobe -d)."""
    for m in rd.main_members(data):
        path = dest / m.name
        if m.mode & 0o170000 == 0o040000:
            path.mkdir(parents=True, exist_ok=True)
        elif m.mode & 0o170000 == 0o100000:
            path.write_bytes(m.data)
        elif m.mode & 0o170000 == 0o120000:
            path.symlink_to(m.data.decode())
    return dest


def modprobe(root: Path, version: str, *names: str) -> list[str]:
    """The files `modprobe --show-depends` loads for `names`, relative to
    the modules directory of `root`."""
    out = subprocess.run(["/sbin/modprobe", "-d", str(root), "-S", version, "--show-depends", *names],
                         capture_output=True, text=True, check=True).stdout
    base = f"{root}/lib/modules/{version}/"
    return [line.split()[1].removeprefix(base) for line in out.splitlines() if line.startswith("insmod ")]


# --- a small initrd without xen-blkfront and ext4 -------------------------------


def test_adds_the_missing_drivers_and_their_dependencies(tree: Path, tmp_path: Path) -> None:
    data = gz(small())
    out, result, plan = repack(data, tree)
    after = by_name(out)
    assert plan.check.missing == ["xen_blkfront", "ext4"]
    assert plan.addition is not None and plan.addition.names == ("xen_blkfront", "ext4")
    for rel in ADDED:  # as the tree has them, compressed or not
        member = after[f"{M}/{rel}"]
        assert member.data == (tree / rel).read_bytes()
        assert (member.mode, member.uid, member.gid, member.nlink) == (0o100644, 0, 0, 1)
    assert f"{M}/kernel/fs/xfs/xfs.ko" not in after and f"{M}/kernel/drivers/net/xen-netfront.ko" not in after
    # crc16 was there: kept, not added again
    assert after[f"{M}/kernel/lib/crc16.ko"].data == ko("kernel/lib/crc16.ko")
    assert f"{M}/kernel/lib/crc16.ko" not in result.added
    for d in (f"{M}/kernel/drivers", f"{M}/kernel/drivers/block", f"{M}/kernel/fs/ext4"):
        assert after[d].mode == 0o040755 and d in result.added
    assert after["conf/modules"].data == b"raid1\nxen_blkfront\next4\n"
    dep = after[f"{M}/modules.dep"].data.decode().splitlines()
    for rel in ("kernel/lib/crc16.ko", *ADDED):
        assert any(line.startswith(f"{rel}:") for line in dep), rel
    assert {"conf/modules", f"{M}/modules.dep"} <= set(result.changed)
    assert f"{M}/modules.dep.bin" in result.added  # the small initrd had none
    # the indexes kmod reads: modprobe finds what was added
    root = extract(out, tmp_path / "x")
    assert modprobe(root, V, "xen_blkfront") == ["kernel/drivers/block/xen-blkfront.ko"]
    assert modprobe(root, V, "jbd2") == ["kernel/fs/jbd2/jbd2.ko.xz"]
    assert plan.as_dict() == {
        "needed": ["xen_blkfront", "ext4|ext3"], "missing": ["xen_blkfront", "ext4"],
        "added": ["xen_blkfront", "ext4"], "files": [f"{M}/{rel}" for rel in sorted(ADDED)],
        "unavailable": [], "source": str(tree), "why": plan.why()}
    assert "xen_blkfront, ext4: neither in the initrd nor built into the kernel" in plan.why()
    assert plan.warnings("x.initrd") == []


def test_directories_come_before_their_files(tree: Path) -> None:
    out, _, _ = repack(gz(small()), tree)
    seen: set[str] = set()
    for m in rd.main_members(out):
        parent = m.name.rpartition("/")[0]
        assert not parent or parent in seen, f"{m.name} before its directory"
        seen.add(m.name)


def test_same_inputs_same_bytes(tree: Path) -> None:
    data = gz(small())
    assert repack(data, tree)[0] == repack(data, tree)[0]


def test_a_second_repack_adds_nothing(tree: Path) -> None:
    once, _, _ = repack(gz(small()), tree)
    twice, result, plan = repack(once, tree)
    assert plan.check.missing == [] and plan.addition is None
    assert twice == once and result.already_applied
    assert plan.why() == "each is in the initrd or built into the kernel"


def test_finish_leaves_what_it_is_given_as_read(tree: Path) -> None:
    """A batch plans every image from one read of the initrd: a repack that
    adds drivers for one image must not add them to that read (once it did,
    and the next image's plan found nothing missing)."""
    data = gz(small())
    prepared = prepare_bytes(data)
    files, done = prepared.module_files, (prepared.done.added[:], prepared.done.changed[:])
    found = initrd_modules.check(files, tree, "ext3")
    addition = initrd_modules.plan(found, tree, V, prepared.module_root(V)).addition
    assert addition is not None
    finish_bytes(prepared, drivers=addition)
    assert prepared.module_files == files
    assert (prepared.done.added, prepared.done.changed) == done
    assert initrd_modules.check(prepared.module_files, tree, "ext3").missing == found.missing


def test_present_drivers_leave_the_initrd_as_a_plain_repack(tree: Path) -> None:
    have = ("kernel/drivers/block/xen-blkfront.ko", "kernel/fs/ext4/ext4.ko.xz", "kernel/lib/crc16.ko")
    data = gz(small(have))
    out, result, plan = repack(data, tree)
    assert plan.addition is None and plan.as_dict()["added"] == []
    assert out == repack_bytes(data)[0]
    assert "conf/modules" not in result.changed


def test_built_in_counts_as_present(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, builtin="kernel/drivers/block/xen-blkfront.ko\nkernel/fs/ext4/ext4.ko\n")
    data = gz(small())
    out, _, plan = repack(data, tree)
    assert plan.check.missing == [] and plan.addition is None
    assert out == repack_bytes(data)[0]


def test_only_what_is_missing(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, builtin="kernel/drivers/block/xen-blkfront.ko\n")
    out, _, plan = repack(gz(small()), tree)
    assert plan.addition is not None and plan.addition.names == ("ext4",)
    assert f"{M}/kernel/drivers/block/xen-blkfront.ko" not in by_name(out)
    assert by_name(out)["conf/modules"].data == b"raid1\next4\n"


def test_the_root_filesystem_decides(tree: Path) -> None:
    out, _, plan = repack(gz(small()), tree, "xfs")
    assert plan.addition is not None and plan.addition.names == ("xen_blkfront", "xfs")
    assert plan.addition.files == ("kernel/drivers/block/xen-blkfront.ko", "kernel/fs/xfs/xfs.ko",
                                   "kernel/lib/crc32c.ko")
    assert f"{M}/kernel/fs/ext4/ext4.ko.xz" not in by_name(out)


def test_an_older_tree_serves_ext3_with_ext3(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "kernel/drivers/block/xen-blkfront.ko:\nkernel/fs/ext3/ext3.ko:\n")
    (tree / "modules.alias").write_text("")
    out, _, plan = repack(gz(small()), tree)
    assert plan.addition is not None and plan.addition.names == ("xen_blkfront", "ext3")
    assert by_name(out)["conf/modules"].data == b"raid1\nxen_blkfront\next3\n"


def test_what_the_tree_lacks_is_warned_about(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, "kernel/drivers/block/xen-blkfront.ko:\n")
    (tree / "modules.alias").write_text("")
    out, _, plan = repack(gz(small()), tree)
    assert plan.unavailable == ("ext4",) and plan.addition is not None
    assert plan.as_dict()["added"] == ["xen_blkfront"] and plan.as_dict()["unavailable"] == ["ext4"]
    assert f"{M}/kernel/drivers/block/xen-blkfront.ko" in by_name(out)
    [warning] = plan.warnings("x.initrd")
    assert warning.startswith("x.initrd has no ext4,") and str(tree) in warning
    assert "cannot mount its root under Xen" in warning


def test_without_a_tree_nothing_is_added_and_it_says_why(tmp_path: Path) -> None:
    data = gz(small())
    out, _, plan = repack(data, tmp_path / "nothing-here")
    assert plan.tree is None and plan.addition is None
    assert plan.unavailable == ("xen_blkfront", "ext4")
    assert out == repack_bytes(data)[0]
    [warning] = plan.warnings("x.initrd")
    assert "no modules tree" in warning and "--modules-dir" in warning
    assert plan.as_dict()["source"] is None and "no modules tree for" in plan.why()


def test_conf_modules_made_when_there_is_none(tree: Path) -> None:
    out, result, _ = repack(gz(small(conf=None)), tree)
    conf = by_name(out)["conf/modules"]
    assert conf.data == b"xen_blkfront\next4\n" and conf.mode == 0o100644
    assert "conf/modules" in result.added


def test_conf_modules_without_final_newline_and_already_listed(tree: Path) -> None:
    out, _, _ = repack(gz(small(conf=b"# comment\next4 some=option")), tree)
    assert by_name(out)["conf/modules"].data == b"# comment\next4 some=option\nxen_blkfront\n"


def test_lib_modules_without_merged_usr(tree: Path) -> None:
    root = f"lib/modules/{V}"
    out, _, plan = repack(gz(small(root=root)), tree)
    assert plan.addition is not None and plan.addition.root == root
    after = by_name(out)
    assert f"{root}/kernel/drivers/block/xen-blkfront.ko" in after
    assert not any(name.startswith(f"{M}/") for name in after)


def test_an_initrd_without_modules_gets_the_directory_and_depmods_inputs(tree: Path) -> None:
    members = [m for m in small(()) if not m.name.startswith("usr/lib/modules")]
    out, result, plan = repack(gz(members), tree)
    assert plan.addition is not None and plan.addition.root == M
    after = by_name(out)
    for name in ("usr/lib/modules", M, f"{M}/modules.builtin", f"{M}/modules.order",
                 f"{M}/modules.dep.bin", f"{M}/kernel/fs/ext4/ext4.ko.xz"):
        assert name in after and name in result.added, name
    assert after[f"{M}/modules.builtin"].data == (tree / "modules.builtin").read_bytes()


def test_a_file_where_a_directory_goes_is_refused(tree: Path) -> None:
    members = small()
    members.append(rd.member(f"{M}/kernel/drivers", 0o100644, b"", ino=90))
    with pytest.raises(InitrdError, match="kernel/drivers in it is not a directory"):
        repack(gz(members), tree)


def test_a_name_leading_out_of_the_modules_directory_is_refused(tree: Path, tmp_path: Path) -> None:
    # depmod's copy is on disk: no name from the initrd may lead out of it.
    members = small()
    escape = tmp_path / "escaped.ko"
    members.append(rd.member(f"{M}/kernel/../../../../../../../..{escape}", 0o100644, b"x", ino=91))
    with pytest.raises(InitrdError, match="unsafe name"):
        repack(gz(members), tree)
    assert not escape.exists()


def test_a_missing_depmod_is_one_error_wherever_it_is_needed(tree: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding drivers to the initrd and building the minimal modules payload
    both run depmod: its absence is the same error (the machine lacks a
    program: exit 1) in both, not bad input in one and a failure in the
    other."""
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(VsaError) as initrd_error:
        repack(gz(small()), tree)
    with pytest.raises(VsaError) as payload_error:
        build_payload(tree, V, tmp_path / "modules.tar", minimal=True)
    for e in (initrd_error.value, payload_error.value):
        assert (e.exit_code, e.kind, e.message) == (1, "missing-tool", "depmod is not installed"), e
        assert e.hint is not None and e.hint.startswith("install kmod")


def test_verify_checks_the_drivers_when_the_tree_is_there(tree: Path, tmp_path: Path) -> None:
    layout = SimpleNamespace(root=SimpleNamespace(partition=SimpleNamespace(fstype="ext3")), array=None)
    data = gz(small())

    def files(initrd_bytes: bytes) -> tuple[str, ...]:
        return initrd.prepare(io.BytesIO(initrd_bytes), action="keep").module_files

    [row] = verify._initrd_drivers(files(data), tree, layout)
    assert row["step"] == "initrd-drivers" and row["status"] == "not applied"
    assert row["details"] == {"missing": ["xen_blkfront", "ext4"]}
    [row] = verify._initrd_drivers(files(repack(data, tree)[0]), tree, layout)
    assert row["status"] == "applied"
    assert verify._initrd_drivers(files(data), tmp_path / "no-tree", layout) == []


def test_module_names_in_conf_modules() -> None:
    assert initrd_modules.listed("# x\n\nraid1\n  ext4 opt=1\n\t# y\n") == ("raid1", "ext4")


# --- the machine's initrd, with the drivers taken out --------------------------------

def initrd_without(debian_kernel: DebianKernel, removed: tuple[str, ...]) -> tuple[bytes, set[str]]:
    """The machine's initrd, main cpio only (zstd), without the `removed`
    modules (paths under lib/modules/VERSION, without the .ko suffix's
    compression); returns it and the member names taken out."""
    root = f"usr/lib/modules/{debian_kernel.version}"
    original = rd.main_members(debian_kernel.initrd.read_bytes())
    names = {m.name for m in original}
    suffixes = {Path(p).name.partition(".ko")[2] for p in names if ".ko" in p}
    gone = {f"{root}/{rel}{suffix}" for rel in removed for suffix in suffixes} & names
    assert len(gone) == len(removed), f"the machine's initrd lacks some of {removed}"
    variant = [m for m in original if m.name not in gone]
    data = subprocess.run(["zstd", "-q", "-1", "-c"], input=rd.write_newc(variant),
                          capture_output=True, check=True).stdout
    return data, gone


REMOVED = ("kernel/drivers/block/xen-blkfront.ko", "kernel/fs/ext4/ext4.ko", "kernel/fs/jbd2/jbd2.ko",
           "kernel/fs/mbcache.ko")


def test_real_initrd_without_blkfront_and_ext4(debian_kernel: DebianKernel, tmp_path: Path) -> None:
    """The variant: the Debian initrd's main cpio without xen-blkfront and
    ext4 (and jbd2 and mbcache, which only ext4 needs), as MODULES=dep makes
    it on a host without them; the repack adds them back from the real tree."""
    version, tree = debian_kernel.version, debian_kernel.modules
    root = f"usr/lib/modules/{version}"
    original = rd.main_members(debian_kernel.initrd.read_bytes())
    data, gone = initrd_without(debian_kernel, REMOVED)

    prepared = prepare_bytes(data)
    found = initrd_modules.check(prepared.module_files, tree, "ext3")
    assert found.missing == ["xen_blkfront", "ext4"]
    plan = initrd_modules.plan(found, tree, version, prepared.module_root(version))
    out, result = finish_bytes(prepared, drivers=plan.addition)
    assert plan.addition is not None and set(plan.addition.paths) == gone

    path = tmp_path / "initrd.img"
    path.write_bytes(out)
    subprocess.run(["unmkinitramfs", str(path), str(tmp_path / "x")], check=True)
    main = tmp_path / "x/main" if (tmp_path / "x/main").is_dir() else tmp_path / "x"
    for rel in REMOVED:
        loaded = modprobe(main, version, Path(rel).name.partition(".")[0])
        assert loaded and all((main / root / f).is_file() for f in loaded), rel
    assert modprobe(main, version, "xen-blkfront")[-1].startswith("kernel/drivers/block/xen-blkfront.ko")
    ext4 = modprobe(main, version, "fs-ext3")  # what the kernel asks for to mount an ext3 root
    assert ext4[-1].startswith("kernel/fs/ext4/ext4.ko") and len(ext4) > 1
    assert (main / "conf/modules").read_text().splitlines()[-2:] == ["xen_blkfront", "ext4"]
    # The same modules as the machine's initrd: depmod's files are the ones
    # mkinitramfs wrote into it.
    before = {m.name: m.data for m in original}
    for name in DEPMOD_FILES:
        assert (main / root / name).read_bytes() == before[f"{root}/{name}"], name
    assert gone <= set(result.added)
    # and a second convert's repack adds nothing
    again = prepare_bytes(out)
    assert initrd_modules.check(again.module_files, tree, "ext3").missing == []
