"""What a SAN/iQ upgrade leaves on a converted disk, and what to tell the user.

The VSA upgrades itself by installing the next release into its other
system slot and making the grub entry that boots it the default (naming its
root /dev/sdaN, as under VMware). Under Xen that slot is not converted, and
nothing boots it yet: the xl config names the converted slot's root, and a
pvgrub/pygrub menu of vsaimage's boots its own entry, not the VSA's default.
`convert --in-place` then converts the slot the VSA chose. Pure: facts in,
a line out.
"""

from __future__ import annotations

import shlex
from collections.abc import Collection


def unconverted_default(image: str, root: int, slots: Collection[int], converted: Collection[int],
                        version: str | None) -> str | None:
    """The line for a disk whose grub default entry boots slot `root`
    (found among `slots`), not converted, while another slot is; None
    otherwise. `converted`: the partitions that carry the conversion."""
    if len(slots) < 2 or root in converted or not set(slots) & set(converted):
        return None
    return (f"the VSA now boots slot p{root}, version {version or 'unknown'}, which is not converted: "
            f"run `vsaimage convert --in-place {shlex.quote(image)}` (with the --kernel and --initrd "
            "of its first conversion)")
