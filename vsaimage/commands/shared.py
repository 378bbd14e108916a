"""What every image of a convert uses, set up once and refused at once when
it is unusable, before any copy or launch: the kernel's version, the initrd
as given (open, and checked to be one), the modules tree, the edits'
settings."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vsaimage.commands.options import ConvertOptions
from vsaimage.edits import EditContext
from vsaimage.errors import BadInput, InitrdError, KernelError
from vsaimage.initrd import cpio
from vsaimage.inputs.source import open_input
from vsaimage.kmod import kernel


@dataclass(frozen=True)
class Shared:
    """What every image of a convert uses: the kernel version, the initrd as
    given (open, checked), the modules tree, and the edits' settings."""

    version: str
    initrd_in: BinaryIO
    modules_dir: Path | None
    ctx: EditContext


@contextlib.contextmanager
def set_up(opts: ConvertOptions) -> Iterator[Shared]:
    """Everything that can be refused cheaply is refused before any work."""
    version = opts.kernel_version or kernel.kernel_version(opts.kernel)
    if not opts.kernel.is_file():
        raise KernelError(f"{opts.kernel}: no such file (--kernel)")
    with _open_initrd(opts.initrd) as initrd_in:
        ctx = EditContext(pci_hack=opts.pci_hack, console_autologin=opts.console_autologin,
                          kernel_version=version)
        yield Shared(version, initrd_in, _modules_dir(opts, version), ctx)


def _modules_dir(opts: ConvertOptions, version: str) -> Path | None:
    if "modules" in opts.skip:
        return None
    d = opts.modules_dir or kernel.modules_tree(version)
    if not (d / "modules.dep").is_file():
        raise BadInput(f"{d}: no modules.dep: not a modules tree for {version}",
                       hint="give the dom0 kernel's modules with --modules-dir, or --skip modules")
    return d


def _open_initrd(path: Path) -> BinaryIO:
    """The --initrd open, refused at once when it is no initrd at all: the
    repack proper runs during the appliance launch, and its error would come
    only after the copy, the launch and the plan."""
    f = open_input(path, InitrdError, "an initrd (--initrd)")
    try:
        cpio.split(f)
    except InitrdError as e:
        f.close()
        raise InitrdError(f"{path}: {e.message}", hint=e.hint) from None
    return f
