"""convert: stage -> launch -> plan -> edit -> verify -> commit, each a named
step over one context (Run), in one appliance session on a staged copy of
each input.

The input is only ever read (a host-side sparse copy, or a read-only drive);
all edits happen on the copy, which is renamed into place with its initrd and
xl config only when every postcondition holds. Host-side work that does not
need the guest (reading the initrd, the modules payload) runs while the
appliance boots; the initrd is written once the plan knows the root
filesystem, whose driver it must hold, while the guest is edited.

Several images share the launch (each copy its own drive, each mounted at /
in turn), the modules payload and the initrd repack; each has its own
outputs, identity and commit, and fails alone (batch.py). A dry run stops
after the plan, on a read-only launch.

With --in-place (inplace.py) there is no copy: the disk itself is the
appliance's drive, every partition of it read-only in the appliance until an
edit writes there, each filesystem mounted read-only until a change is to
be written into it (so a second run, with nothing to change, writes
nothing), and only the initrd and the xl config are staged and committed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsaimage.commands import apply, batch, inplace, results
from vsaimage.commands.background import REPACK_WORKERS, in_background, timed
from vsaimage.commands.options import BatchOptions, ConvertOptions, Refused
from vsaimage.commands.planning import Planned, check_xl_settings, initrd_status, plan_image
from vsaimage.commands.shared import Shared, set_up
from vsaimage.edits import InstallModules, Status, UploadFile, pcihack
from vsaimage.errors import Failure, InitrdError, write_error
from vsaimage.guest import appliance as guest
from vsaimage.initrd import modules as initrd_modules
from vsaimage.initrd import repack as initrd
from vsaimage.inputs import unpack
from vsaimage.inputs.source import open_input
from vsaimage.kmod import kernel
from vsaimage.kmod import payload as module_payload
from vsaimage.kmod.payload import ModulePayload
from vsaimage.model import Drive
from vsaimage.outputs.copy import stage_input
from vsaimage.outputs.staging import OutputPaths, Staging, check_destination, open_output, write_bytes
from vsaimage.plan import Plan
from vsaimage.progress import Progress
from vsaimage.xen import xlcfg


@dataclass
class Image(batch.Item):
    """One image of a convert: its options and outputs, and what the steps
    have done with it so far."""

    opts: ConvertOptions = field(kw_only=True)
    outputs: OutputPaths = field(kw_only=True)
    staging: Staging | None = None
    fmt: str = "raw"
    input_facts: dict[str, Any] = field(default_factory=dict)
    planned: Planned | None = None
    repack: apply.Repack | None = None
    unchanged: list[str] = field(default_factory=list)  # guest files an upload found in place
    doc: dict[str, Any] = field(default_factory=dict)

    def discard(self) -> None:
        if self.staging is not None:
            self.staging.discard()

    @property
    def finals(self) -> tuple[Path, ...]:
        """The files this image's convert writes (in place: not the disk)."""
        return self.outputs.all()[1:] if self.opts.in_place else self.outputs.all()

    def drive(self) -> Drive:
        """The appliance's drive for this image: its staged copy, or the
        disk itself."""
        if self.opts.in_place:
            return self.opts.image.drive(readonly=False)
        assert self.staging is not None
        return Drive(str(self.staging.temp(self.outputs.image)), readonly=False, format=self.fmt)

    @property
    def grows(self) -> Path | None:
        """The host file the guest's writes make bigger, if any."""
        if not self.opts.in_place:
            assert self.staging is not None
            return self.staging.temp(self.outputs.image)
        path = self.opts.image.path
        return path if path is not None and path.is_file() else None


@dataclass
class Run:
    """One convert, of one image or several: the settings they share, and
    what the host-side work beside the appliance has started."""

    settings: ConvertOptions  # the first image's: the command line gave them all the same
    shared: Shared
    images: Sequence[Image]
    rep: Progress
    alone: bool  # one image: its failure propagates
    stack: contextlib.ExitStack  # closes the staging, scratch files and outputs at the end
    prepared: concurrent.futures.Future[initrd.Prepared] | None = None
    payload: concurrent.futures.Future[ModulePayload] | None = None
    repacks: dict[initrd_modules.Addition | None, apply.Repack] = field(default_factory=dict)
    launches: int = 0

    @property
    def live(self) -> list[Image]:
        return [i for i in self.images if i.ok]

    @property
    def action(self) -> pcihack.Action:
        return pcihack.action(self.settings.pci_hack, self.settings.skip)

    def attempt(self, image: Image) -> contextlib.AbstractContextManager[None]:
        return batch.attempt(image, alone=self.alone, clean_up=image.discard)


# --- the entry points ---------------------------------------------------------


def convert(opts: ConvertOptions, rep: Progress) -> dict[str, Any]:
    """Convert one image; any failure propagates."""
    outputs = OutputPaths.from_option(opts.output)
    if opts.in_place:
        opts = inplace.keep_settings(opts, outputs)
    image = Image(str(opts.image), rep, opts=opts, outputs=outputs)
    check_xl_settings(opts, image.outputs)
    with set_up(opts) as shared, contextlib.ExitStack() as stack:
        run = Run(opts, shared, [image], rep, True, stack)
        (_dry_run if opts.dry_run else _convert)(run)
    return results.single("convert", _shared_doc(run), image.doc)


def convert_batch(opts: BatchOptions, rep: Progress) -> dict[str, Any]:
    """Convert several images in one appliance launch, sharing the modules
    payload and the initrd repack; each image has its own outputs, identity
    and commit, and one failing does not stop the others."""
    items: list[batch.Item] = []
    for entry in opts.images:
        if isinstance(entry, Refused):
            item = batch.Item(entry.text, rep.for_image(entry.text))
            batch.fail(item, Failure.of(entry.error))
            items.append(item)
        else:
            items.append(Image(str(entry.image), rep.for_image(entry.image.name), opts=entry,
                               outputs=OutputPaths.from_option(entry.output)))
    images = [i for i in items if isinstance(i, Image)]
    for image in images:
        with batch.attempt(image, alone=False):
            check_xl_settings(image.opts, image.outputs)
    settings = _first(opts)
    with set_up(settings) as shared, contextlib.ExitStack() as stack:
        run = Run(settings, shared, images, rep, False, stack)
        (_dry_run if settings.dry_run else _convert)(run)
    _warn_shared_identity(images, rep)
    docs = [i.doc if isinstance(i, Image) and i.ok else results.failed_image(i) for i in items]
    return results.batch("convert", items, docs, _shared_doc(run))


# --- the steps, in the order they run ---------------------------------------------


def _convert(run: Run) -> None:
    """stage -> launch -> plan -> edit -> verify -> commit."""
    _stage(run)
    live = run.live
    if not live:
        return
    _start_host_work(run)
    with _launch(run, [i.drive() for i in live]) as g:
        for n, image in enumerate(live):
            with run.attempt(image):
                if image.opts.in_place:
                    g.protect(g.devices()[n])
                # in place, each filesystem stays read-only until written
                _plan(run, image, g, n, writable=not image.opts.in_place)
                _edit(run, image, g)
                _verify(run, image, g)
            g.unmount_all()
    for image in live:
        if image.ok:
            with run.attempt(image):
                _commit(run, image)


def _dry_run(run: Run) -> None:
    """launch (read-only) -> plan, for each image; nothing is written."""
    if not run.live:
        return
    # a dry run writes no initrd: every image may read the same one
    prepared = initrd.prepare(run.shared.initrd_in, action=run.action)
    run.prepared = concurrent.futures.Future()
    run.prepared.set_result(prepared)
    drives: list[Drive] = []
    for image in run.live:
        with batch.attempt(image, alone=run.alone):
            drive, image.input_facts = run.stack.enter_context(unpack.readable(image.opts.image, image.rep))
            drives.append(drive)
    live = run.live
    if not live:
        return
    with _launch(run, drives) as g:
        for n, image in enumerate(live):
            with batch.attempt(image, alone=run.alone):
                _plan(run, image, g, n, writable=False)
                assert image.planned is not None
                image.doc = results.convert_image(image.text, image.input_facts, image.outputs,
                                                  image.opts.format, image.planned, image.planned.plan,
                                                  image.opts.xl, in_place=image.opts.in_place)
                if not run.alone:
                    image.doc |= results.record(image.rep)
            g.unmount_all()


def _stage(run: Run) -> None:
    """Refuse outputs that exist or clobber an input, then copy each input
    into its staged output (in place: refuse a disk in use, and copy
    nothing; the initrd and config it replaces are its own)."""
    for image in run.live:
        with batch.attempt(image, alone=run.alone):
            o = image.opts
            inputs = [p for p in (o.image.path, o.kernel, o.initrd) if p is not None]
            check_destination(image.finals, force=o.force or o.in_place, inputs=inputs)
            if o.in_place:
                inplace.check_free(o.image)
    for image in run.live:
        image.staging = run.stack.enter_context(Staging(image.finals))
    for image in run.live:
        with run.attempt(image):
            assert image.staging is not None
            if image.opts.in_place:
                image.fmt, image.input_facts = image.opts.format, image.opts.image.facts()
                continue
            image.fmt, image.input_facts = stage_input(
                image.opts.image, image.opts.format, image.staging.temp(image.outputs.image),
                image.outputs.image, image.staging, image.rep)


def _start_host_work(run: Run) -> None:
    """What runs beside the appliance launch: the initrd read, and the
    modules payload (the repacks start once each plan knows its drivers)."""
    settings, shared, rep = run.settings, run.shared, run.rep
    scratch = run.live[0].staging
    assert scratch is not None
    run.prepared = prepared = in_background(timed(rep, "initrd read", lambda: initrd.prepare(
        shared.initrd_in, action=run.action)))
    modules_dir = shared.modules_dir
    if modules_dir is None:
        return
    tarball = scratch.scratch("modules.tar")
    # Opened here, not in the thread: the end of the convert removes its
    # scratch files, and a thread creating one late would leave it behind.
    out = run.stack.enter_context(open_output(tarball, label=run.live[0].outputs.image))

    def build_payload() -> ModulePayload:
        # minimal: the guest also needs what the initrd loads at boot,
        # which the repack reads anyway (decompressing it twice would
        # double the memory peak)
        extra = prepared.result().conf_modules if settings.modules_minimal else ()
        with rep.phase("modules payload"):
            return module_payload.build_payload(
                modules_dir, shared.version, tarball, minimal=settings.modules_minimal,
                extra_modules=extra, out=out)

    run.payload = in_background(build_payload)


@contextlib.contextmanager
def _launch(run: Run, drives: Sequence[Drive]) -> Iterator[guest.Guest]:
    """The appliance with every image's drive. It is launched in this thread
    (libguestfs errors stay silent only in the thread that made the
    handle), while the host-side work proceeds."""
    before = guest.launch_count
    with run.rep.phase("appliance launch"):
        g = guest.launch(drives, run.rep)
    try:
        with g:
            yield g
    finally:
        run.launches = guest.launch_count - before


def _plan(run: Run, image: Image, g: guest.Guest, drive: int, *, writable: bool) -> None:
    """Find and mount the image's roles, read what the plan needs, decide
    every item; its warnings become the run's."""
    assert run.prepared is not None
    with image.rep.phase("plan"):
        image.planned = plan_image(g, image.opts, run.shared.ctx, image.outputs, run.shared.modules_dir,
                                   run.prepared.result, writable=writable, drive=drive)
    image.planned.tell(image.rep)


def _edit(run: Run, image: Image, g: guest.Guest) -> None:
    """Start the image's repack, then write its guest changes."""
    assert image.planned is not None
    image.repack = _repack_for(run, image)
    size = os.fstat(run.shared.initrd_in.fileno()).st_size
    image.unchanged = apply.edit(g, image.opts, image.planned, run.payload, image.repack, image.rep,
                                 grows=image.grows, initrd_out=image.outputs.initrd,
                                 reserve=size + size // 4)


def _verify(run: Run, image: Image, g: guest.Guest) -> None:
    assert image.planned is not None
    apply.verify(g, image.opts, image.planned, image.rep)


def _commit(run: Run, image: Image) -> None:
    """Write the image's initrd and xl config, commit its three outputs, and
    fill its document."""
    assert image.staging is not None and image.planned is not None and image.repack is not None
    rep, outputs, planned = image.rep, image.outputs, image.planned
    repacked, initrd_result = image.repack.result()
    warning = kernel.check_initrd_versions(run.shared.version, initrd_result.module_versions)
    if warning:
        rep.warn(warning)
    try:
        shutil.copyfile(repacked, image.staging.temp(outputs.initrd))
    except OSError as e:
        raise write_error(outputs.initrd, e) from e
    cfg = planned.cfg
    write_bytes(image.staging.temp(outputs.cfg), xlcfg.render(cfg).encode(), label=outputs.cfg)
    image.staging.commit()
    rep.debug(f"renamed into place: {', '.join(str(p) for p in outputs.all())}")
    image.doc = results.convert_image(image.text, image.input_facts, outputs, image.fmt, planned,
                                      _executed(run, image, initrd_result), image.opts.xl,
                                      in_place=image.opts.in_place)
    if not run.alone:
        image.doc |= results.record(rep)


# --- what the steps share ------------------------------------------------------


def _repack_for(run: Run, image: Image) -> apply.Repack:
    """One repack per set of drivers to add (the same for images whose roots
    need the same driver), into a scratch file each image copies. A repack
    that adds drivers reads the initrd through a file of its own: repacks run
    at once in threads, and two cannot stream from one file offset."""
    assert image.planned is not None and run.prepared is not None
    addition, settings, prepared = image.planned.drivers.addition, run.settings, run.prepared
    if addition in run.repacks:
        return run.repacks[addition]
    scratch = run.live[0].staging
    assert scratch is not None
    path = scratch.scratch(f"initrd{len(run.repacks)}")
    label = image.outputs.initrd
    # Opened here, not in the thread: the end of the convert removes its
    # scratch files, and a thread starting late would leave one behind.
    out = run.stack.enter_context(open_output(path, label=label))

    def repack() -> tuple[Path, initrd.RepackResult]:
        with contextlib.ExitStack() as source_stack:
            if addition is None:
                source = prepared.result()
            else:
                f = source_stack.enter_context(
                    open_input(settings.initrd, InitrdError, "an initrd (--initrd)"))
                source = initrd.prepare(f, action=run.action)
            try:
                result = initrd.finish(source, out, compression=settings.initrd_compression,
                                       drivers=addition, threads=REPACK_WORKERS)
                out.close()  # a failed flush is this repack's failure too
            except OSError as e:  # the input's read errors are InitrdErrors
                raise write_error(label, e) from e
        return path, result

    run.repacks[addition] = in_background(timed(run.rep, "initrd repack", repack))
    return run.repacks[addition]


def _executed(run: Run, image: Image, initrd_result: initrd.RepackResult) -> Plan:
    """The image's plan as carried out, with what execution measured."""
    assert image.planned is not None
    planned = image.planned
    facts: dict[str, dict[str, object]] = {"initrd": initrd_result.as_dict()}
    if run.payload is not None and any(isinstance(c, InstallModules) for c in planned.plan.changes):
        p = run.payload.result()
        facts["modules"] = {"files": p.files, "bytes": p.bytes, "absent": list(p.absent)}
    statuses: dict[str, Status] = {"initrd": initrd_status(run.action, initrd_result.already_applied,
                                                             done=True)}
    boot_step = next((s for s in planned.plan.steps if s.step == "bootloader"), None)
    if boot_step is not None and boot_step.status == "apply":
        facts["bootloader"] = {"unchanged": image.unchanged}
        if all(isinstance(c, UploadFile) and c.path in image.unchanged for c in boot_step.changes):
            statuses["bootloader"] = "already applied"
    return planned.plan.executed(facts, statuses)


def _first(opts: BatchOptions) -> ConvertOptions:
    """The settings every image shares: those of the first image that has
    options (the command line gave them all the same)."""
    found = next((o for o in opts.images if isinstance(o, ConvertOptions)), None)
    if found is None:
        failed = next(o for o in opts.images if isinstance(o, Refused))
        raise failed.error
    return found


def _warn_shared_identity(images: Sequence[Image], rep: Progress) -> None:
    """Two nodes with one MAC are one node to their management group (the
    VSA takes its serial id from it), and the motherboard UUID the VSA
    computes comes from the domain UUID: say so when a batch holds clones
    (dd copies of one VSA record the same MAC and root filesystem UUID)."""
    seen: dict[tuple[str, str], str] = {}
    for i in images:
        if not (i.ok and i.planned is not None):
            continue
        for what in (("MAC", i.planned.cfg.mac), ("UUID", i.planned.cfg.uuid)):
            if what in seen:
                rep.warn(f"{seen[what]} and {i.text} get the same {what[0]} {what[1]}: convert one of "
                         "them on its own with --new-identity (or --mac and --uuid)")
            seen.setdefault(what, i.text)


def _shared_doc(run: Run) -> dict[str, Any]:
    return results.convert_shared(kernel_path=str(run.settings.kernel.absolute()),
                                  kernel_version=run.shared.version, dry_run=run.settings.dry_run,
                                  launches=run.launches, rep=run.rep)
