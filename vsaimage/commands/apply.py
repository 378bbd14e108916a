"""The guest half of a convert, on the mounted output in the launched
appliance: the plan's changes written (files, the boot files, the modules
payload), then every postcondition read back and checked.
"""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

from vsaimage.commands.options import ConvertOptions
from vsaimage.commands.planning import Planned
from vsaimage.edits import InstallModules, UploadFile, WriteFile
from vsaimage.edits.modules import guest_dir
from vsaimage.errors import ImageError, VerifyError
from vsaimage.guest.appliance import Guest
from vsaimage.guest.layout import Layout
from vsaimage.initrd.repack import RepackResult
from vsaimage.kmod.payload import ModulePayload
from vsaimage.outputs.staging import ensure_space
from vsaimage.plan import postconditions, read_snapshot
from vsaimage.progress import Progress
from vsaimage.xen import bootmenu

Repack = concurrent.futures.Future[tuple[Path, RepackResult]]


def edit(g: Guest, opts: ConvertOptions, planned: Planned,
         payload: concurrent.futures.Future[ModulePayload] | None, repack: Repack,
         rep: Progress, *, grows: Path | None, initrd_out: Path, reserve: int) -> list[str]:
    """Apply the plan's guest changes on the mounted disk; returns the guest
    files an upload found already there. `grows`: the host file the guest's
    writes make bigger (a staged or sparse disk; None for a block device or
    a LUN); `reserve`: bytes the initrd's directory must also keep free for
    the initrd written after."""
    plan = planned.plan
    install = next((c for c in plan.changes if isinstance(c, InstallModules)), None)
    tarball = payload.result().tarball.stat().st_size if install and payload else 0
    written = sum(len(c.data) for c in plan.changes if isinstance(c, WriteFile))
    uploads = [c for c in plan.changes if isinstance(c, UploadFile)]
    sources: dict[str, Path] = {}
    unchanged: list[str] = []
    if uploads:
        # the initrd the guest's menu boots is the repacked one: wait for it
        # (a second or two more than a direct boot) so that the boot
        # partition's room is known before anything is written
        with rep.phase("initrd repack (wait)"):
            repacked = repack.result()[0]
        sources = {c.path: opts.kernel if c.source == "kernel" else repacked for c in uploads}
        written += sum(os.path.getsize(source) for source in sources.values())
        _check_boot_room(g, sources, planned.layout)
        # a file already there is not sent again, nor is its filesystem
        # mounted read-write for it
        unchanged = [path for path, source in sources.items() if g.holds(source, path)]
    # the filesystem inside the image needs room for metadata and its journal
    _ensure_room(grows, tarball + tarball // 8 + written + 32 * 2**20, initrd_out, reserve)
    if repack.done():  # a failed repack stops the convert before anything is written
        repack.result()
    sends = {path: source for path, source in sources.items() if path not in unchanged}
    with rep.phase("edits"):
        g.make_writable([*(c.path for c in plan.changes if isinstance(c, WriteFile)), *sends,
                         *([guest_dir(install.version)] if install else [])])
        for c in plan.changes:
            if isinstance(c, WriteFile):
                g.write(c.path, c.data, c.mode)
    if sources:
        _upload(g, sends, len(sources), rep)
    if install is not None:
        assert payload is not None, "modules step planned although skipped"
        p = payload.result()
        size = p.tarball.stat().st_size
        with rep.phase("modules transfer", total=size, nbytes=True) as ph:
            g.tar_in(p.tarball, guest_dir(install.version),
                     progress=lambda sent: ph.update(sent, size))
            ph.detail = f"({p.files} files, {p.bytes / 2**20:.0f} MiB)"
    return unchanged


def verify(g: Guest, opts: ConvertOptions, planned: Planned, rep: Progress) -> None:
    """Every postcondition holds on the output, read back from the guest."""
    with rep.phase("verify"):
        g.sync()
        status = postconditions(read_snapshot(g, planned.ctx, skip=opts.skip), planned.ctx, opts.skip)
        failed = [name for name, ok in status.items() if not ok]
        if failed:
            raise VerifyError(f"after the edits, these postconditions do not hold: {', '.join(failed)}")


def _ensure_room(grows: Path | None, guest_bytes: int, initrd_out: Path, reserve: int) -> None:
    """The disk's host file has room for what the guest writes, and the
    initrd's directory for the initrd (one check when they share it)."""
    needs: dict[Path, tuple[Path, int]] = {}
    for label, nbytes in ([(grows, guest_bytes)] if grows is not None else []) + [(initrd_out, reserve)]:
        first, total = needs.get(label.parent, (label, 0))
        needs[label.parent] = (first, total + nbytes)
    for directory, (label, nbytes) in needs.items():
        ensure_space(directory, nbytes, label=label)


def _upload(g: Guest, sends: dict[str, Path], files: int, rep: Progress) -> None:
    """Copy each host file of `sends` to its guest path (`files`: how many
    the step has, those already there included)."""
    total = sum(os.path.getsize(source) for source in sends.values())
    with rep.phase("boot files", total=total, nbytes=True) as ph:
        sent = 0
        for path, source in sends.items():
            g.upload(source, path)
            sent += os.path.getsize(source)
            ph.update(sent, total)
        ph.detail = f"({files} files, {total / 2**20:.0f} MiB sent" + (
            f", {files - len(sends)} already there)" if len(sends) < files else ")")


def _check_boot_room(g: Guest, sources: dict[str, Path], layout: Layout) -> None:
    """The kernel and initrd fit on the filesystem holding /boot (the files
    they replace counted as free)."""
    need = sum(os.path.getsize(s) for s in sources.values())
    free = g.free_bytes(bootmenu.OWN_DIR) + sum(g.file_size(p) for p in sources)
    # a little room for the menu, the directory and the filesystem's blocks
    if need + 2**20 > free:
        holder = layout.boot or layout.root
        raise ImageError(
            f"partition {holder.partition.number} (/boot) has {free / 2**20:.1f} MiB free for the kernel "
            f"and initrd, which need {need / 2**20:.1f} MiB",
            hint="free room in the VSA's /boot, recompress the initrd (--initrd-compression xz), "
                 "or use --boot direct")
