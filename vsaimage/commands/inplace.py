"""`convert --in-place`: the disk converted where it is, with no copy: a
disk converted before that has changed since (the VSA upgraded itself into
its other system slot), or a raw disk the user wants converted without a
second copy.

What differs from a copying convert is decided here, before any work: which
disks can be converted in place (what Xen boots: a raw file, a block
device, an iSCSI LUN, or a qcow2 file; not a compressed or packed image,
nor a VMDK, VHD or VHDX, which need a copy anyway), where OUT.initrd and
OUT.cfg go (beside a disk file, else as -o names them), that nothing holds
the disk open for writing, and the settings of the config it replaces,
kept for each option the command line leaves at its default.

One system disk only: a root on an md mirror over two (SAN/iQ 8) is
refused, given with --system-disk or --degraded, found on the disk, or
named by the config it would replace. Converting one half where it is
would leave the halves different at the next assembly, and converting both
is not done in place.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from vsaimage.commands.options import ConvertOptions, Roles, XlOptions, default
from vsaimage.errors import BadInput, ImageError
from vsaimage.guest.layout import Layout, where
from vsaimage.inputs import held
from vsaimage.inputs.source import ImageSource
from vsaimage.outputs.staging import OutputPaths
from vsaimage.xen import xlcfg, xlread

_COPY = "convert it to a copy instead (-o OUT.img, without --in-place)"
_MIRROR = "convert it to a copy instead: -o OUT.img without --in-place, --system-disk for the other half"


def _mirror_refused(image: ImageSource, why: str) -> BadInput:
    return BadInput(f"{image}: --in-place converts a single system disk, and {why}", hint=_MIRROR)


def output_name(image: ImageSource, output: Path | None) -> Path:
    """What names OUT.initrd and OUT.cfg: -o, else the disk file itself
    (`vsa.img`: `vsa.initrd` and `vsa.cfg` beside it)."""
    if output is not None:
        return output
    if image.path is None or image.path.is_block_device():
        what = "an iSCSI LUN" if image.path is None else "a block device"
        raise BadInput(f"{image}: --in-place on {what} needs -o OUT, the name of OUT.initrd and OUT.cfg")
    return image.path


def disk_format(image: ImageSource, asked: str) -> str:
    """The format the disk keeps (the xl config's); `asked` is --format."""
    if image.packed:
        raise ImageError(f"{image}: a {image.format} image cannot be converted in place: Xen cannot "
                         "boot it as it is", hint=_COPY)
    if image.format not in xlcfg.DISK_FORMATS:
        raise ImageError(f"{image}: Xen does not boot a {image.format} disk: it cannot be converted in "
                         "place", hint=_COPY)
    if asked not in (default("format"), image.format):
        raise BadInput(f"--format {asked}: a disk converted in place keeps its format ({image.format})")
    return image.format


def check_roles(image: ImageSource, roles: Roles) -> None:
    """Refuse the options of an md root (SAN/iQ 8) before any work."""
    if roles.system_disks:
        raise _mirror_refused(image, f"{len(roles.disks(image))} are given (with --system-disk)")
    if roles.degraded:
        raise _mirror_refused(image, "--degraded would convert one half of the root's md mirror, leaving "
                                     "the other as it was")


def check_layout(image: ImageSource, layout: Layout) -> None:
    """Refuse a root found on an md array, or on a lone member of one
    (--degraded, refused before; its partition names the array too)."""
    root = layout.root.partition
    if root.array:
        raise _mirror_refused(image, f"its root is on {where(root)}, a mirror over several disks")


def check_free(image: ImageSource) -> None:
    """Refuse a disk something else holds open for writing (its VSA
    running). An iSCSI LUN is not checked: its target knows its other
    initiators, this host does not."""
    if image.path is None:
        return
    found = held.holders(image.path, image.format)
    if found:
        raise ImageError(f"{image}: open for writing by {'; '.join(found)}: shut down the domain that "
                         "runs from it, then convert it", hint="--in-place never edits a disk in use")


def keep_settings(opts: ConvertOptions, outputs: OutputPaths) -> ConvertOptions:
    """`opts` with what the config at OUT.cfg says of the domain, for each
    xl option left at its default (uuid and MAC not with --new-identity)."""
    cfg = outputs.cfg
    if not cfg.is_file():
        return opts
    try:
        text = cfg.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"{cfg}: cannot read the xl config to keep its settings: {e}") from None
    found = xlread.kept(text, str(cfg))
    if found.system_disks or found.root_array:
        what = (f"its root on md array {found.root_array}" if found.root_array else
                f"{1 + len(found.system_disks)} system disks")
        raise _mirror_refused(opts.image, f"{cfg} boots a VM with {what}")
    given, unset = opts.xl, XlOptions()
    values: dict[str, Any] = {
        "name": found.name, "memory": found.memory, "vcpus": found.vcpus, "bridge": found.bridge,
        "boot": found.boot, "guest_type": found.guest_type,
        "data_disks": tuple(Path(d) for d in found.data_disks) or None, "extra": found.user_args or None,
        **({} if given.new_identity else {"uuid": found.uuid, "mac": found.mac})}
    kept = {f.name: values[f.name] for f in fields(XlOptions)
            if values.get(f.name) is not None and getattr(given, f.name) == getattr(unset, f.name)}
    return replace(opts, xl=replace(given, **kept, kept=frozenset(kept), kept_from=cfg))
