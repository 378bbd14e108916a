"""The guest half of a convert, on the mounted output in the launched
appliance: the plan's changes written (files, the boot files, the modules
payload), then every postcondition read back and checked.
"""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

from vsaimage.commands import room
from vsaimage.commands.options import ConvertOptions
from vsaimage.commands.planning import Planned
from vsaimage.commands.room import Choice
from vsaimage.edits import InstallModules, MakeLink, UploadFile, WriteFile
from vsaimage.edits.modules import guest_dir
from vsaimage.errors import VerifyError
from vsaimage.guest import md
from vsaimage.guest.appliance import Guest
from vsaimage.initrd.repack import RepackResult
from vsaimage.kmod.payload import ModulePayload
from vsaimage.outputs.staging import ensure_space
from vsaimage.plan import postconditions, read_snapshot
from vsaimage.progress import Progress

Repack = concurrent.futures.Future[tuple[Path, RepackResult]]


def edit(g: Guest, opts: ConvertOptions, planned: Planned,
         payload: concurrent.futures.Future[ModulePayload] | None, repack: Repack,
         rep: Progress, *, grows: Path | None, initrd_out: Path, reserve: int,
         payload_device: str | None = None) -> list[str]:
    """Apply the plan's guest changes on the mounted disk; returns the guest
    files an upload found already there. `grows`: the host file the guest's
    writes make bigger (a staged or sparse disk; None for a block device or
    a LUN); `reserve`: bytes the initrd's directory must also keep free for
    the initrd written after; `payload_device`: the appliance's device of a
    payload that travels by image."""
    plan = planned.plan
    install = next((c for c in plan.changes if isinstance(c, InstallModules)), None)
    # what the payload adds to the image: its files' blocks (an image's
    # allocated size, not its sparse one)
    tarball = payload.result().file.stat().st_blocks * 512 if install and payload else 0
    writes = [c for c in plan.changes if isinstance(c, WriteFile)]
    written = sum(len(c.data) for c in writes)
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
        # a file already there is not sent again, nor is its filesystem
        # mounted read-write for it
        unchanged = [path for path, source in sources.items() if g.holds(source, path)]
    sends = {path: source for path, source in sources.items() if path not in unchanged}
    written += sum(os.path.getsize(source) for source in sends.values())
    modules = planned.modules
    room.check(g, [*((c.path, len(c.data)) for c in writes), *room.sizes(sends.items()),
                   *_modules_room(g, install, modules)])
    # the filesystem inside the image needs room for metadata and its journal
    _ensure_room(grows, tarball + tarball // 8 + written + 32 * 2**20, initrd_out, reserve)
    if repack.done():  # a failed repack stops the convert before anything is written
        repack.result()
    with rep.phase("edits"):
        g.make_writable([*(c.path for c in plan.changes if isinstance(c, WriteFile | MakeLink)), *sends,
                         *([guest_dir(install.version)] if install else [])])
        for c in plan.changes:
            if isinstance(c, WriteFile):
                g.write(c.path, c.data, c.mode)
            elif isinstance(c, MakeLink):
                g.symlink(c.path, c.target)
    if sources:
        _upload(g, sends, len(sources), rep)
    if install is not None:
        assert payload is not None, "modules step planned although skipped"
        _install_modules(g, payload.result(), guest_dir(install.version), rep, payload_device)
    return unchanged


def _install_modules(g: Guest, p: ModulePayload, directory: str, rep: Progress, device: str | None) -> None:
    if p.transport == "image":
        assert device is not None, "an image payload without its drive"
        with rep.phase("modules transfer", total=p.bytes, nbytes=True) as ph:
            g.copy_tree(device, directory, p.bytes, progress=lambda done: ph.update(done, p.bytes))
            ph.detail = f"({p.files} files, {p.bytes / 2**20:.0f} MiB, copied from an image in the appliance)"
        return
    size = p.file.stat().st_size
    with rep.phase("modules transfer", total=size, nbytes=True) as ph:
        g.tar_in(p.file, directory, progress=lambda sent: ph.update(sent, size))
        ph.detail = f"({p.files} files, {p.bytes / 2**20:.0f} MiB)"


def close_array(g: Guest, planned: Planned, rep: Progress) -> None:
    """The root's md array, once edited, stopped with its members clean and
    naming it as the guest does (md.close); refused when they then
    disagree."""
    array = planned.layout.array
    if array is None:
        return
    g.unmount_all()
    with rep.phase("md array"):
        ok, why = md.close(g, array).agreement()
    rep.debug(f"md array {array.name}: {why}")
    if not ok:
        raise VerifyError(f"md array {array.name}: its members do not agree after the edits: {why}")


def verify(g: Guest, opts: ConvertOptions, planned: Planned, rep: Progress) -> None:
    """Every postcondition holds on the output, read back from the guest."""
    with rep.phase("verify"):
        g.sync()
        status = postconditions(read_snapshot(g, planned.ctx, skip=opts.skip), planned.ctx, opts.skip)
        array = planned.layout.array
        if array is not None:  # still in use: md marks it clean once idle, after this
            status["md-members"], why = array.reread(g).agreement(clean=False)
            rep.debug(f"md array {array.name}: {why}")
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


def _modules_room(g: Guest, install: InstallModules | None, modules: Choice | None) -> list[tuple[str, int]]:
    """The room the modules payload takes, as room.check counts writes."""
    if install is None or modules is None:
        return []
    where = guest_dir(install.version)
    return [(where, modules.size.need(g.room(where).block))]
