"""The untimed preparation of the hand-written peer (bench/peer.sh): the edited
files it uploads, the modules tarball, the pcihack script, the xl config.

The edited files come from vsaimage's pure edit functions applied to the
files of the input's root filesystem, read on the host with `debugfs rdump`
(no appliance): the peer then does exactly the writes convert does, and the
benchmark compares only how they get into the image.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from vsaimage.edits import EditContext, InstallModules, WriteFile
from vsaimage.edits.pcihack import PCIHACK_SCRIPT
from vsaimage.guest.hosttree import HostTree
from vsaimage.kmod import payload as module_payload
from vsaimage.plan import build, read_snapshot

# The files bench/peer.sh uploads, by the name it gives them in PREP.
PEER_FILES = {
    "/etc/init.d/lhn_functions": "lhn_functions",
    "/hack/bus/pci/devices": "devices",
    "/etc/lefthand/brand/common/fst": "fst",
    "/etc/lefthand/system/lib/hal/libhal.so": "libhal.so",
    "/etc/lefthand/system/liblhnsys.so": "liblhnsys.so",
    "/sbin/hwid": "hwid",
    "/etc/udev/rules.d/53-devfs-hack.rules": "53-devfs-hack.rules",
    "/etc/udev/scripts/xvd-hack.sh": "xvd-hack.sh",
    "/etc/lefthand/brand/brand.init": "brand.init",
    "/etc/lefthand/brand/rc.drivers": "rc.drivers",
    "/etc/inittab": "inittab",
    "/etc/securetty": "securetty",
    "/etc/fstab": "fstab",
}

XL_CFG = """\
type = "pv"
name = "vsa-peer"
kernel = "{kernel}"
ramdisk = "{ramdisk}"
root = "/dev/xvda5"
extra = "console=hvc0"
memory = 3072
vcpus = 2
disk = ["format=raw,vdev=xvda,access=rw,target={disk}"]
"""


def edited_files(image: Path, root_offset: int, version: str) -> dict[str, WriteFile]:
    """The writes convert would make on `image`, computed on the host."""
    with tempfile.TemporaryDirectory(prefix="vsaimage-bench-") as tmp:
        subprocess.run(["debugfs", "-R", f"rdump / {tmp}", f"{image}?offset={root_offset}"],
                       check=True, capture_output=True)
        ctx = EditContext(kernel_version=version)
        snap = read_snapshot(HostTree(Path(tmp)), ctx)
        plan = build(snap, ctx, frozenset())
    writes = {c.path: c for c in plan.changes if isinstance(c, WriteFile)}
    if set(writes) != set(PEER_FILES) or not any(isinstance(c, InstallModules) for c in plan.changes):
        raise RuntimeError(f"the plan writes {sorted(writes)}: bench/peer.sh needs updating")
    return writes


def prepare(prep: Path, *, image: Path, root_offset: int, version: str, modules_dir: Path,
            minimal: bool, kernel: Path) -> module_payload.ModulePayload:
    """Fill `prep` for bench/peer.sh; returns the modules payload written."""
    shutil.rmtree(prep, ignore_errors=True)
    prep.mkdir(parents=True)
    for path, change in edited_files(image, root_offset, version).items():
        (prep / PEER_FILES[path]).write_bytes(change.data)
    (prep / "version").write_text(version + "\n")
    (prep / "pcihack").write_bytes(PCIHACK_SCRIPT)
    (prep / "vsa.cfg").write_text(XL_CFG.format(kernel=kernel, ramdisk=prep / "out.initrd",
                                                disk=prep / "out.img"))
    return module_payload.build_payload(modules_dir, version, prep / "modules.tar", minimal=minimal)
