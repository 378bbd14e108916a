"""Builds the harness from the packages `make setup` extracted (see
fixtures/debs.py) and the host's Debian kernel, without root:

- `xen-4.17-amd64`: the hypervisor, gunzipped (QEMU's `-kernel` loads the
  ELF32 multiboot image, not the .gz);
- `dom0-<kernel version>.cpio`: the dom0's initramfs (newc, uncompressed:
  the emulated CPU unpacks it faster than it would gunzip it): a static
  busybox, `xl`, `xenstored`, `xenconsoled`, `xenconsole`, `xen-init-dom0`,
  the `xenstore-*` tools, Debian's hotplug scripts with bash and flock, the
  libraries all of these load, the kernel modules of the list below and
  `dom0-init.sh` as /init; for domUs that boot from their own disk,
  pvgrub2's images, and pygrub with the python (and the part of its standard
  library) it runs on.

    python3 -m tests.xenharness.dom0     (run by scripts/setup-system.sh)
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from fixtures import debs  # noqa: E402
from fixtures.build_image import default_busybox, default_cache  # noqa: E402

XEN_BIN = "usr/lib/xen-4.17/bin"
PROGRAMS = [
    *(f"{XEN_BIN}/{p}" for p in ("xl", "xenstored", "xenconsoled", "xenconsole", "xen-init-dom0")),
    "usr/bin/xenstore", "bin/bash", "usr/bin/flock",
    # dlopen()ed by glibc for pthread_cancel: xl aborts without it
    "lib/x86_64-linux-gnu/libgcc_s.so.1",
]  # fmt: skip
# libxl runs `bootloader = "pygrub"` from XEN_BIN; pygrub reads the guest's
# boot filesystem through xenfsimage, whose ext2fs-lib plugin reads ext2/3/4
# (a VSA's /boot is ext3).
XEN_LIB = "usr/lib/xen-4.17/lib"
PYTHON = "usr/lib/python3.11"
PYGRUB = [
    f"{XEN_BIN}/pygrub", "usr/bin/python3.11",
    f"{XEN_LIB}/python/xenfsimage.cpython-311-x86_64-linux-gnu.so",
    f"{XEN_LIB}/x86_64-linux-gnu/xenfsimage/ext2fs-lib/fsimage.so",
    *(f"{PYTHON}/lib-dynload/{m}.cpython-311-x86_64-linux-gnu.so"
      for m in ("_ctypes", "_curses", "resource")),
]  # fmt: skip
# The standard library modules pygrub imports (measured with `python3 -v`
# running it), outside those frozen into the interpreter. os.py is the
# landmark by which python finds the rest. shutil's optional bz2 and lzma are
# left out.
PYGRUB_STDLIB = (
    "__future__", "_weakrefset", "bisect", "collections/__init__", "collections/abc",
    "contextlib", "copy", "copyreg", "ctypes/__init__", "ctypes/_endian", "ctypes/util",
    "curses/__init__", "curses/ascii", "curses/textpad", "encodings/__init__",
    "encodings/aliases", "encodings/utf_8", "enum", "fnmatch", "functools", "getopt",
    "gettext", "keyword", "linecache", "locale", "logging/__init__", "operator", "os",
    "platform", "random", "re/__init__", "re/_casefix", "re/_compiler", "re/_constants",
    "re/_parser", "reprlib", "selectors", "shutil", "signal", "string", "struct",
    "subprocess", "tempfile", "textwrap", "threading", "token", "tokenize", "traceback",
    "types", "warnings", "weakref",
)  # fmt: skip
# pvgrub2 for PV and PVH guests, at the paths an xl config names them by.
GRUB_XEN = ("usr/lib/grub-xen/grub-x86_64-xen.bin", "usr/lib/grub-xen/grub-i386-xen_pvh.bin")
XENSTORE_TOOLS = ("read", "write", "list", "exists", "rm", "chmod", "ls", "watch")
# Loaded in this order by dom0-init.sh (xenfs needs privcmd); their
# dependencies come first, from the kernel's modules.dep.
MODULES = (
    "xen-privcmd", "xenfs", "xen-evtchn", "xen-gntdev", "xen-gntalloc", "xen-blkback",
    "xen-netback", "bridge", "virtio_pci", "virtio_blk", "virtio_console",
)  # fmt: skip


def kernel_version() -> str:
    """The newest Debian kernel in /boot: the dom0's and the domU's."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        raise SystemExit("no /boot/vmlinuz-*: make setup installs linux-image-amd64")
    return kernels[-1].name.removeprefix("vmlinuz-")


def harness_dir() -> Path:
    return default_cache() / "xen"


def hypervisor() -> Path:
    return harness_dir() / "xen-4.17-amd64"


def dom0_initramfs(version: str) -> Path:
    return harness_dir() / f"dom0-{version}.cpio"


def module_order(moddir: Path) -> list[str]:
    """Paths (relative to `moddir`) of MODULES and their dependencies, each
    after what it needs."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {Path(p).name.removesuffix(".ko").replace("_", "-"): p for p in deps}
    order: list[str] = []

    def add(path: str) -> None:
        if path not in order:
            for dep in reversed(deps[path]):
                add(dep)
            order.append(path)

    for name in MODULES:
        add(by_name[name.replace("_", "-")])
    return order


def stage_bootloaders(tree: Path, root: Path) -> None:
    debs.install(tree, PYGRUB, root)
    (root / "usr/bin/python3").symlink_to("python3.11")  # pygrub's #! line
    for module in PYGRUB_STDLIB:
        (root / PYTHON / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree / PYTHON / f"{module}.py", root / PYTHON / f"{module}.py")
    shutil.copytree(tree / XEN_LIB / "python/grub", root / XEN_LIB / "python/grub",
                    ignore=shutil.ignore_patterns("__pycache__"))
    # libxl runs the bootloader with TERM=vt100, for pygrub's curses menu.
    (root / "lib/terminfo/v").mkdir(parents=True)
    shutil.copyfile(tree / "lib/terminfo/v/vt100", root / "lib/terminfo/v/vt100")
    for image in GRUB_XEN:
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree / image, root / image)


def stage(root: Path, version: str) -> None:
    tree = debs.debian_root(default_cache())
    debs.install(tree, PROGRAMS, root)
    stage_bootloaders(tree, root)
    for tool in XENSTORE_TOOLS:
        (root / f"usr/bin/xenstore-{tool}").symlink_to("xenstore")
    (root / "usr/sbin").mkdir(parents=True)
    (root / "usr/sbin/xl").symlink_to(f"../../{XEN_BIN}/xl")
    shutil.copytree(tree / "etc/xen/scripts", root / "etc/xen/scripts", symlinks=True)
    (root / "etc/xen/xl.conf").write_text("")
    busybox = default_busybox()
    (root / "bin").mkdir(exist_ok=True)
    shutil.copyfile(busybox, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if not (root / "bin" / applet).exists() and applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    moddir = Path("/lib/modules") / version
    order = module_order(moddir)
    for rel in order:
        (root / "lib/modules" / version / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(moddir / rel, root / "lib/modules" / version / rel)
    (root / "etc/dom0-modules").write_text("".join(f"/lib/modules/{version}/{p}\n" for p in order))
    shutil.copyfile(HERE / "dom0-init.sh", root / "init")
    (root / "init").chmod(0o755)
    for d in ("proc", "sys", "dev", "run", "tmp", "var/lock", "var/log/xen", "var/lib/xen",
              "var/run/xen", "var/run/xenstored", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)


def write_cpio(root: Path, out: Path) -> None:
    """newc, every entry owned by root (-R 0:0 needs no privilege)."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    with out.open("wb") as f:
        subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], cwd=root,
                       input="\n".join(names) + "\n", stdout=f, text=True, check=True)


def build() -> tuple[Path, Path]:
    version = kernel_version()
    harness_dir().mkdir(parents=True, exist_ok=True)
    tree = debs.debian_root(default_cache())
    xen = hypervisor()
    with gzip.open(tree / "boot/xen-4.17-amd64.gz") as src, open(f"{xen}.partial", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(f"{xen}.partial", xen)
    out = dom0_initramfs(version)
    with tempfile.TemporaryDirectory(prefix="dom0-", dir=harness_dir()) as tmp:
        stage(Path(tmp) / "root", version)
        write_cpio(Path(tmp) / "root", Path(tmp) / "dom0.cpio")
        os.replace(Path(tmp) / "dom0.cpio", out)
    return xen, out


if __name__ == "__main__":
    for path in build():
        print(f"xen harness: {path} ({path.stat().st_size // 2**20} MiB)")
