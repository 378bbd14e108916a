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
from vsaimage.commands.background import in_background, timed
from vsaimage.commands.options import BatchOptions, ConvertOptions, Refused
from vsaimage.commands.planning import Planned, check_xl_settings, initrd_drivers, initrd_status, plan_image
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

# The root filesystem of the VSAs known (and of the fixtures): the repack
# for its drivers starts while the appliance boots, before the plan has
# found the root; a root of another type gets a repack of its own after.
LIKELY_ROOT_FS = "ext3"


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
    drive: int = 0  # the appliance's drive of its first system disk (the others follow)

    def discard(self) -> None:
        if self.staging is not None:
            self.staging.discard()

    @property
    def finals(self) -> tuple[Path, ...]:
        """The files this image's convert writes (in place: not the disk)."""
        return self.outputs.all()[1:] if self.opts.in_place else self.outputs.all()

    def drives(self) -> list[Drive]:
        """The appliance's drives for this image: the staged copy of each
        system disk, or the disk itself."""
        if self.opts.in_place:
            return [self.opts.image.drive(readonly=False)]
        assert self.staging is not None
        return [Drive(str(self.staging.temp(d)), readonly=False, format=self.fmt)
                for d in self.outputs.system_disks]

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
    # the modules payloads by kind (minimal or not), started when first wanted
    payloads: dict[bool, concurrent.futures.Future[ModulePayload]] = field(default_factory=dict)
    # by what each adds: drivers, the root's md array
    repacks: dict[tuple[initrd_modules.Addition | None, str | None], apply.Repack] = field(
        default_factory=dict)
    # the drivers a root of LIKELY_ROOT_FS needs, and their repack, started
    # while the appliance boots
    likely: concurrent.futures.Future[initrd_modules.Addition | None] | None = None
    likely_repack: apply.Repack | None = None
    repack_files: int = 0
    payload_drive: Drive | None = None  # the payload's image, attached after the images' drives
    payload_device: str | None = None  # ... and its device in the appliance
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
    outputs = OutputPaths.from_option(opts.output, len(opts.roles.disks(opts.image)))
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
    drives: list[Drive] = []
    for i in live:
        i.drive = len(drives)
        drives += i.drives()
    extra = [run.payload_drive] if run.payload_drive is not None else []
    with _launch(run, [*drives, *extra]) as g:
        if extra:
            run.payload_device = g.devices()[len(drives)]
        for image in live:
            with run.attempt(image):
                if image.opts.in_place:
                    g.protect(g.devices()[image.drive])
                # in place, each filesystem stays read-only until written
                _plan(run, image, g, image.drive, writable=not image.opts.in_place)
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
            image.drive = len(drives)
            found, image.input_facts = run.stack.enter_context(
                unpack.readable_disks(image.opts.roles.disks(image.opts.image), image.rep))
            drives += found
    live = run.live
    if not live:
        return
    with _launch(run, drives) as g:
        for image in live:
            with batch.attempt(image, alone=run.alone):
                _plan(run, image, g, image.drive, writable=False)
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
            disks = [d.path for d in o.roles.disks(o.image)]
            inputs = [p for p in (*disks, o.kernel, o.initrd) if p is not None]
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
            for disk, out in zip(image.opts.roles.disks(image.opts.image), image.outputs.system_disks,
                                 strict=True):
                image.fmt, facts = stage_input(disk, image.opts.format, image.staging.temp(out), out,
                                               image.staging, image.rep)
                image.input_facts = image.input_facts or facts


def _start_host_work(run: Run) -> None:
    """What runs beside the appliance launch: the initrd read, then the
    repack the plan most likely asks for (the drivers a root of
    LIKELY_ROOT_FS needs: a plan that finds another root, or an md array,
    starts its own), and the modules payload. With --modules auto the full
    tree is built while the plan decides: a root without room for it gets
    the minimal set, built then."""
    settings, shared = run.settings, run.shared
    run.prepared = prepared = in_background(timed(run.rep, "initrd read", lambda: initrd.prepare(
        shared.initrd_in, action=run.action)))
    run.likely = in_background(lambda: initrd_drivers(settings, shared.version, prepared.result(),
                                                      LIKELY_ROOT_FS).addition)
    run.likely_repack = _start_repack(run, run.likely, None, run.live[0].outputs.initrd)
    if shared.modules_dir is not None:
        _payload(run, minimal=settings.modules == "minimal")


def _payload(run: Run, *, minimal: bool) -> concurrent.futures.Future[ModulePayload]:
    """The modules payload of a kind (full or minimal), built once, in the
    background, for every image that takes it. The full one is an image,
    attached at the launch (so started before it); a minimal one a tar."""
    if minimal in run.payloads:
        return run.payloads[minimal]
    shared, prepared = run.shared, run.prepared
    assert shared.modules_dir is not None and prepared is not None
    modules_dir = shared.modules_dir
    scratch = run.live[0].staging
    assert scratch is not None
    label = run.live[0].outputs.image
    if module_payload.transport(minimal=minimal) == "image":
        assert run.launches == 0, "the full payload's drive is attached at the launch"
        image = scratch.scratch("modules.img")
        # at its final size (sparse) now: the launch attaches it, and it is
        # filled while the appliance boots
        with open_output(image, label=label) as f:
            f.truncate(module_payload.image_size(modules_dir))
        run.payload_drive = Drive(str(image), readonly=True, format="raw")

        def build_payload() -> ModulePayload:
            with run.rep.phase("modules payload"):
                try:
                    return module_payload.build_image(modules_dir, shared.version, image)
                except OSError as e:
                    raise write_error(label, e) from e
    else:
        tarball = scratch.scratch("modules-minimal.tar")
        # Opened here, not in the thread: the end of the convert removes its
        # scratch files, and a thread creating one late would leave it behind.
        out = run.stack.enter_context(open_output(tarball, label=label))

        def build_payload() -> ModulePayload:
            # the guest also needs what the initrd loads at boot, which the
            # repack reads anyway (decompressing it twice would double the
            # memory peak)
            extra = prepared.result().conf_modules
            with run.rep.phase("modules payload"):
                return module_payload.build_payload(modules_dir, shared.version, tarball, minimal=True,
                                                    extra_modules=extra, out=out)

    run.payloads[minimal] = in_background(build_payload)
    return run.payloads[minimal]


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
    modules = image.planned.modules
    payload = _payload(run, minimal=modules.minimal) if modules is not None else None
    image.unchanged = apply.edit(g, image.opts, image.planned, payload, image.repack, image.rep,
                                 grows=image.grows, initrd_out=image.outputs.initrd,
                                 reserve=size + size // 4, payload_device=run.payload_device)


def _verify(run: Run, image: Image, g: guest.Guest) -> None:
    assert image.planned is not None
    apply.verify(g, image.opts, image.planned, image.rep)
    apply.close_array(g, image.planned, image.rep)


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
    rep.debug(f"renamed into place: {', '.join(str(p) for p in image.finals)}")
    image.doc = results.convert_image(image.text, image.input_facts, outputs, image.fmt, planned,
                                      _executed(run, image, initrd_result), image.opts.xl,
                                      in_place=image.opts.in_place)
    if not run.alone:
        image.doc |= results.record(rep)


# --- what the steps share ------------------------------------------------------


def _repack_for(run: Run, image: Image) -> apply.Repack:
    """The repack of the drivers and md array line the image's root needs:
    the one started at the launch when it guessed them, else one started now
    (the same for images whose roots need the same), into a scratch file
    each image copies."""
    assert image.planned is not None and run.likely is not None
    addition, array = image.planned.drivers.addition, image.planned.md_array
    key = (addition, array)
    if key not in run.repacks:
        if run.likely_repack is not None and array is None and run.likely.result() == addition:
            run.repacks[key] = run.likely_repack
        else:
            known: concurrent.futures.Future[initrd_modules.Addition | None] = concurrent.futures.Future()
            known.set_result(addition)
            run.repacks[key] = _start_repack(run, known, array, image.outputs.initrd)
    return run.repacks[key]


def _start_repack(run: Run, addition: concurrent.futures.Future[initrd_modules.Addition | None],
                  md_array: str | None, label: Path) -> apply.Repack:
    """A repack adding the drivers `addition` names, once known, and the md
    array line. One that adds any reads the initrd through a file of its
    own: repacks run at once in threads, and two cannot stream from one
    file offset."""
    settings, prepared = run.settings, run.prepared
    assert prepared is not None
    scratch = run.live[0].staging
    assert scratch is not None
    run.repack_files += 1
    path = scratch.scratch(f"initrd{run.repack_files}")
    # Opened here, not in the thread: the end of the convert removes its
    # scratch files, and a thread starting late would leave one behind.
    out = run.stack.enter_context(open_output(path, label=label))

    def repack() -> tuple[Path, initrd.RepackResult]:
        drivers = addition.result()
        with contextlib.ExitStack() as source_stack:
            if drivers is None and md_array is None:
                source = prepared.result()
            else:
                f = source_stack.enter_context(
                    open_input(settings.initrd, InitrdError, "an initrd (--initrd)"))
                source = initrd.prepare(f, action=run.action)
            try:
                result = initrd.finish(source, out, compression=settings.initrd_compression,
                                       drivers=drivers, md_array=md_array)
                out.close()  # a failed flush is this repack's failure too
            except OSError as e:  # the input's read errors are InitrdErrors
                raise write_error(label, e) from e
        return path, result

    return in_background(timed(run.rep, "initrd repack", repack))


def _executed(run: Run, image: Image, initrd_result: initrd.RepackResult) -> Plan:
    """The image's plan as carried out, with what execution measured."""
    assert image.planned is not None
    planned = image.planned
    facts: dict[str, dict[str, object]] = {"initrd": initrd_result.as_dict()}
    if planned.modules is not None and any(isinstance(c, InstallModules) for c in planned.plan.changes):
        p = run.payloads[planned.modules.minimal].result()
        facts["modules"] = {"files": p.files, "bytes": p.bytes, "absent": list(p.absent),
                            "transport": p.transport}
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
