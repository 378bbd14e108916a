"""Frozen option sets, built once from the command line; the core never sees
an argparse Namespace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vsaimage.edits import DEFAULT_PCI_HACK, PciHack
from vsaimage.errors import BadInput
from vsaimage.inputs.source import ImageSource


@dataclass(frozen=True)
class Roles:
    root_part: int | None = None
    boot_part: int | None = None


@dataclass(frozen=True)
class InspectOptions:
    image: ImageSource
    roles: Roles = Roles()
    bundle: Path | None = None
    force: bool = False


@dataclass(frozen=True)
class VerifyOptions:
    image: ImageSource
    roles: Roles = Roles()
    initrd: Path | None = None
    kernel_version: str | None = None
    pci_hack: PciHack = DEFAULT_PCI_HACK
    skip: frozenset[str] = frozenset()


@dataclass(frozen=True)
class XlOptions:
    name: str | None = None
    # SAN/iQ needs about 3 GiB to run; xl's own default (128 MiB) would not
    # even get the VSA through its boot scripts.
    memory: int = 3072  # MiB
    vcpus: int = 2
    bridge: str = "xenbr0"
    mac: str | None = None
    uuid: str | None = None
    data_disks: tuple[Path, ...] = ()
    new_identity: bool = False
    boot: str = "direct"  # bootmenu.BOOT_MODES
    guest_type: str = "pv"  # xlcfg.GUEST_TYPES


@dataclass(frozen=True)
class ConvertOptions:
    image: ImageSource
    kernel: Path
    initrd: Path
    output: Path
    format: str = "raw"
    pci_hack: PciHack = DEFAULT_PCI_HACK
    console_autologin: bool = False
    skip: frozenset[str] = frozenset()
    roles: Roles = Roles()
    force: bool = False
    dry_run: bool = False
    kernel_version: str | None = None
    modules_dir: Path | None = None
    modules_minimal: bool = False
    initrd_compression: str | None = None
    xl: XlOptions = XlOptions()


@dataclass(frozen=True)
class Refused:
    """An image of several that its arguments already rule out (no such
    file, no partition table): it fails alone, the others go on."""

    text: str  # as the user wrote it
    error: BadInput


@dataclass(frozen=True)
class BatchOptions:
    """Several images converted (or verified) in one appliance launch, in the
    order given. Each convert's options differ only in `image` and `output`
    (every output named after its input); the first one's settings are
    everyone's."""

    images: tuple[ConvertOptions | Refused, ...]


@dataclass(frozen=True)
class VerifyBatch:
    """verify with several images, in one read-only appliance launch."""

    images: tuple[VerifyOptions | Refused, ...]


@dataclass(frozen=True)
class InitrdOptions:
    input: Path
    output: Path
    compression: str | None = None
    force: bool = False
