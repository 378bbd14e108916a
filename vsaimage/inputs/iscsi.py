"""iSCSI LUNs on the host side: their size, asked before the appliance is
launched (convert pre-creates its output at that size and attaches it next to
the LUN, so both must exist when the appliance starts).

The size comes from `qemu-img info` over qemu's own iSCSI client (libiscsi,
Debian's qemu-block-extra): the same client libguestfs's appliance uses to
read the LUN, so it needs nothing more, no root and no kernel initiator, and
answers in milliseconds."""

from __future__ import annotations

import json
import subprocess

from vsaimage import tools
from vsaimage.errors import ImageError

# A LUN that does not answer (a firewall dropping packets) must not hang a CI job.
QEMU_IMG_TIMEOUT = 60.0

_NO_CLIENT = "install Debian's qemu-block-extra (qemu's iSCSI client, which libguestfs uses too)"


def lun_size(uri: str, *, image: str | None = None) -> int:
    """The size in bytes of the LUN at `uri` (iscsi://HOST:PORT/IQN/LUN);
    errors name `image`, the URI as the user wrote it."""
    image = image or uri
    try:
        r = tools.run(["qemu-img", "info", "-f", "raw", "--output=json", uri], "qemu-utils",
                      timeout=QEMU_IMG_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ImageError(f"{image}: no answer from the iSCSI target "
                         f"within {QEMU_IMG_TIMEOUT:.0f} s") from None
    if r.returncode != 0:
        why = tools.reason(r.stderr, "qemu-img", names=[uri], default="qemu-img info failed")
        raise ImageError(f"{image}: cannot open the LUN: {why}",
                         hint=_NO_CLIENT if "Unknown protocol" in r.stderr else None)
    try:
        size = int(json.loads(r.stdout)["virtual-size"])
    except (ValueError, KeyError, TypeError):
        raise ImageError(f"{image}: qemu-img info gave no size for the LUN") from None
    if size <= 0:
        raise ImageError(f"{image}: the LUN is empty")
    return size
