"""convert: inspect → plan → apply → verify, in one appliance session on a
staged copy of each input.

The input is only ever read (a host-side sparse copy, or a read-only drive);
all edits happen on the copy, which is renamed into place with its initrd and
xl config only when every postcondition holds. Host-side work that does not
need the guest (reading the initrd, the modules payload) runs while the
appliance boots; the initrd is written once the plan knows the root
filesystem, whose driver it must hold, while the guest is edited.

Several images share the launch (each copy its own drive, each mounted at /
in turn), the modules payload and the initrd repack; each has its own
outputs, identity and commit, and fails alone (batch.py).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from vsaimage import __version__
from vsaimage.commands import batch
from vsaimage.commands.options import BatchOptions, ConvertOptions, Refused
from vsaimage.edits import (
    EditContext,
    InstallModules,
    Snapshot,
    Status,
    UploadFile,
    WriteFile,
    pcihack,
)
from vsaimage.edits.mobo_uuid import fallback_uuid
from vsaimage.errors import (
    BadInput,
    Failure,
    ImageError,
    InitrdError,
    KernelError,
    VerifyError,
    write_error,
)
from vsaimage.guest import appliance as guest
from vsaimage.guest.layout import Layout, find_layout, layout_lines, partition_facts
from vsaimage.initrd import cpio
from vsaimage.initrd import modules as initrd_modules
from vsaimage.initrd import repack as initrd
from vsaimage.inputs import unpack
from vsaimage.inputs.diskformat import COMPRESSED, qemu_name
from vsaimage.inputs.source import open_input
from vsaimage.kmod import kernel
from vsaimage.kmod import payload as module_payload
from vsaimage.kmod.payload import ModulePayload
from vsaimage.model import BootFiles, Drive
from vsaimage.outputs.files import (
    OutputPaths,
    Staging,
    check_destination,
    ensure_space,
    open_output,
    qemu_img_convert,
    source_size,
    sparse_copy,
    write_bytes,
)
from vsaimage.plan import HostItem, Plan, build, guest_modules_dir, postconditions, read_snapshot
from vsaimage.progress import Progress
from vsaimage.vsa import glibc
from vsaimage.xen import bootmenu, identity, xlcfg

T = TypeVar("T")

# Guest files read for the xl config rather than for an edit.
GUEST_FACTS = (*glibc.READS, *identity.READS)

# Host-side work beside the appliance runs at a lower priority, and the
# repack with one zstd worker (same bytes as two, see archive.LEVELS): under
# TCG the appliance is a CPU-bound qemu, and on 2 CPUs a repack at full speed
# beside a launch made it 1.6-2.9 times as long as alone, one at nice 10 with
# one worker 0.6-1.15 times (one worker at nice 0: 0.9-1.2), in two runs of
# bench/bench_background.py (results/background.md: launches of 12-44 s
# alone, load 3-9 from other work). One worker also keeps ~30 MiB off the
# peak RSS. The cost: on a machine busy with other work the repack (~5 s of
# one CPU) can end well after the edits (once 145 s, at load 9).
BACKGROUND_NICE = 10
REPACK_WORKERS = 1


def _in_background(fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    """Run `fn` in a daemon thread: an interrupted convert must not wait for a
    compression to finish before it can clean up and exit."""
    fut: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            # Linux's nice is per thread, and inherited by the threads this
            # one starts (zstd's workers).
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
            fut.set_result(fn())
        except BaseException as e:
            fut.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return fut


def _edit_context(opts: ConvertOptions, version: str) -> EditContext:
    return EditContext(pci_hack=opts.pci_hack, console_autologin=opts.console_autologin,
                       kernel_version=version)


def _modules_dir(opts: ConvertOptions, version: str) -> Path | None:
    if "modules" in opts.skip:
        return None
    d = opts.modules_dir or Path("/lib/modules") / version
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


@dataclass(frozen=True)
class Planned:
    """Everything a convert will do, decided before anything is written."""

    layout: Layout
    ctx: EditContext  # with this image's partitions and boot files
    plan: Plan
    cfg: xlcfg.XlConfig
    who: identity.Identity
    libc: glibc.Glibc
    drivers: initrd_modules.DriverPlan

    def tell(self, rep: Progress) -> None:
        """Warnings in the plan's details (an fstab entry naming a disk Xen
        will not have, a MAC the guest's network set-up does not expect)
        become the run's warnings; with -v, the roles and every change are
        detail lines."""
        for line in [*layout_lines(self.layout), *self.plan.lines()]:
            rep.debug(line)
        for warning in self.plan.warnings:
            rep.warn(warning)

    def doc(self, plan: Plan | None = None) -> dict[str, Any]:
        """The result document's part that the plan (or, when given, the
        executed plan) decides."""
        done = plan or self.plan
        return {
            "root_partition": self.layout.root.partition.number,
            "boot_partition": self.layout.boot.partition.number if self.layout.boot else None,
            "steps": done.as_dicts(), "output_files": done.outputs, "guest_paths": done.guest_paths,
            "xl": {"name": self.cfg.name, **self.who.as_dict(), "boot": self.cfg.boot,
                   "type": self.cfg.guest_type},
            "glibc": self.libc.as_dict(),
        }


def _plan(g: guest.Guest, opts: ConvertOptions, ctx: EditContext, outputs: OutputPaths,
          modules_dir: Path | None, prepared: Callable[[], initrd.Prepared], *,
          writable: bool, drive: int) -> Planned:
    """Find the layout of the appliance's `drive`-th disk and mount it as the
    VSA does (writable for a convert), read what the edits and the xl config
    need, and plan every item. `prepared` gives the initrd as read (waiting
    for it if need be)."""
    layout = find_layout(g, str(opts.image), root_part=opts.roles.root_part,
                         boot_part=opts.roles.boot_part, writable=writable, drive=drive)
    ctx = replace(ctx, partitions=partition_facts(layout))
    snap = read_snapshot(g, ctx, skip=opts.skip, extra=GUEST_FACTS)
    libc, who = glibc.detect(snap), _identity(opts, layout, snap)
    cfg = _xl_config(opts, layout, outputs, libc, who)
    if cfg.boot != "direct":
        ctx = replace(ctx, boot=_boot_files(cfg, layout, ctx.kernel_version or ""))
    drivers = _initrd_drivers(opts, ctx.kernel_version or "", prepared(), layout)
    plan = _full_plan(opts, build(snap, ctx, opts.skip), cfg, libc, who, outputs, modules_dir,
                      prepared(), drivers)
    return Planned(layout, ctx, plan, cfg, who, libc, drivers)


def _boot_files(cfg: xlcfg.XlConfig, layout: Layout, version: str) -> BootFiles:
    """What the guest's own menu boots: the kernel and initrd of a direct
    boot, with its command line, from the filesystem holding /boot."""
    holder = layout.boot or layout.root
    return BootFiles(cfg.boot, version, xlcfg.command_line(cfg.root_part, cfg.vsyscall_emulate),
                              holder.partition.uuid, "" if layout.boot else "/boot")


def _full_plan(opts: ConvertOptions, guest_plan: Plan, cfg: xlcfg.XlConfig, libc: glibc.Glibc,
               who: identity.Identity, outputs: OutputPaths, modules_dir: Path | None,
               prepared: initrd.Prepared, drivers: initrd_modules.DriverPlan) -> Plan:
    """The guest steps with the host items around them: the disk copy first,
    the initrd and the xl config after; the modules step names its source."""
    source = {"source": str(modules_dir), "minimal": opts.modules_minimal}
    steps = tuple(replace(s, details={**s.details, **source})
                  if s.step == "modules" and modules_dir is not None else s for s in guest_plan.steps)
    copy = HostItem("copy", "The converted disk (a copy of the input)", str(outputs.image),
                    details={"input": str(opts.image), "format": opts.format})
    action, add = prepared.action, drivers.addition
    title = pcihack.TITLES[action] + (f"; adds {', '.join(add.names)}" if add else "")
    initrd_details: dict[str, object] = {
        "input": str(opts.initrd), "pcihack": action,
        "compression": opts.initrd_compression or "as the input", "drivers": drivers.as_dict()}
    initrd_item = HostItem("initrd", title, str(outputs.initrd),
                           _initrd_status(action, prepared.done_nothing and add is None, done=False),
                           initrd_details, tuple(drivers.warnings(opts.initrd)))
    xl_details: dict[str, object] = {
        "name": cfg.name, **who.as_dict(), "root": f"/dev/xvda{cfg.root_part}",
        "vsyscall_emulate": cfg.vsyscall_emulate, "glibc": libc.why, "boot": cfg.boot,
        "type": cfg.guest_type}
    xl = HostItem("xl", "xl config", str(outputs.cfg), details=xl_details,
                  warnings=(who.warning,) if who.warning else ())
    return replace(guest_plan, steps=steps).with_host(before=[copy], after=[initrd_item, xl])


@dataclass
class _Image(batch.Item):
    """One image of a convert: its options and outputs, and what has been
    done with it so far."""

    opts: ConvertOptions = field(kw_only=True)
    outputs: OutputPaths = field(kw_only=True)
    staging: Staging | None = None
    fmt: str = "raw"
    input_facts: dict[str, Any] = field(default_factory=dict)
    planned: Planned | None = None
    repack: concurrent.futures.Future[tuple[Path, initrd.RepackResult]] | None = None
    unchanged: list[str] = field(default_factory=list)  # guest files an upload found in place
    doc: dict[str, Any] = field(default_factory=dict)

    def discard(self) -> None:
        if self.staging is not None:
            self.staging.discard()


@dataclass(frozen=True)
class _Shared:
    """What every image of a convert uses: the kernel version, the initrd as
    given (open, checked), the modules tree, and the edits' settings."""

    version: str
    initrd_in: BinaryIO
    modules_dir: Path | None
    ctx: EditContext


@contextlib.contextmanager
def _shared(opts: ConvertOptions) -> Iterator[_Shared]:
    """Everything that can be refused cheaply is refused before any work."""
    version = opts.kernel_version or kernel.kernel_version(opts.kernel)
    if not opts.kernel.is_file():
        raise KernelError(f"{opts.kernel}: no such file (--kernel)")
    with _open_initrd(opts.initrd) as initrd_in:
        yield _Shared(version, initrd_in, _modules_dir(opts, version), _edit_context(opts, version))


def convert(opts: ConvertOptions, rep: Progress) -> dict[str, Any]:
    """Convert one image; any failure propagates."""
    image = _Image(str(opts.image), rep, opts=opts, outputs=OutputPaths.from_option(opts.output))
    with _shared(opts) as shared:
        launches = _run([image], opts, shared, rep, alone=True)
    return {"success": True, "command": "convert", "tool_version": __version__, **image.doc,
            "kernel": _kernel_doc(opts, shared.version), "appliance_launches": launches,
            "timings": dict(rep.timings), "warnings": list(rep.warnings)}


def dry_run(opts: ConvertOptions, rep: Progress) -> dict[str, Any]:
    image = _Image(str(opts.image), rep, opts=opts, outputs=OutputPaths.from_option(opts.output))
    with _shared(opts) as shared:
        _dry_run([image], opts, shared, rep, alone=True)
    return {"success": True, "command": "convert", "dry_run": True, "tool_version": __version__,
            "kernel_version": shared.version, **image.doc}


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
            items.append(_Image(str(entry.image), rep.for_image(entry.image.name), opts=entry,
                                outputs=OutputPaths.from_option(entry.output)))
    images = [i for i in items if isinstance(i, _Image)]
    settings = _first(opts)
    with _shared(settings) as shared:
        if settings.dry_run:
            launches = _dry_run(images, settings, shared, rep, alone=False)
        else:
            launches = _run(images, settings, shared, rep, alone=False)
    _warn_shared_identity(images, rep)
    docs = [i.doc if isinstance(i, _Image) and i.ok else batch.failed_doc(i) for i in items]
    common: dict[str, Any] = {"tool_version": __version__, "kernel": _kernel_doc(settings, shared.version),
                              "appliance_launches": launches, "timings": dict(rep.timings),
                              "warnings": list(rep.warnings)}
    if settings.dry_run:
        common["dry_run"] = True
    return batch.result("convert", items, docs, common)


def _first(opts: BatchOptions) -> ConvertOptions:
    """The settings every image shares: those of the first image that has
    options (the command line gave them all the same)."""
    found = next((o for o in opts.images if isinstance(o, ConvertOptions)), None)
    if found is None:
        failed = next(o for o in opts.images if isinstance(o, Refused))
        raise failed.error
    return found


def _warn_shared_identity(images: Sequence[_Image], rep: Progress) -> None:
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


def _kernel_doc(opts: ConvertOptions, version: str) -> dict[str, str]:
    return {"path": str(opts.kernel.absolute()), "version": version}


def _dry_run(images: Sequence[_Image], settings: ConvertOptions, shared: _Shared, rep: Progress, *,
             alone: bool) -> int:
    """Plan each image in one read-only launch; returns the launches made."""
    live = [i for i in images if i.ok]
    if not live:
        return 0
    prepared = initrd.prepare(shared.initrd_in, action=pcihack.action(settings.pci_hack, settings.skip))
    launches_before = guest.launch_count
    with contextlib.ExitStack() as stack:
        drives: list[Drive] = []
        for image in live:
            with batch.attempt(image, alone=alone):
                drive, image.input_facts = stack.enter_context(unpack.readable(image.opts.image, image.rep))
                drives.append(drive)
        live = [i for i in live if i.ok]
        if not live:
            return 0
        with rep.phase("appliance launch"):
            g = guest.launch(drives, rep)
        with g:
            for n, image in enumerate(live):
                with batch.attempt(image, alone=alone), image.rep.phase("plan"):
                    # a dry run writes no initrd: every image may read the same one
                    image.planned = _plan(g, image.opts, shared.ctx, image.outputs, shared.modules_dir,
                                          lambda: prepared, writable=False, drive=n)
                    image.planned.tell(image.rep)
                    image.doc = {"success": True, "input": image.text, "input_facts": image.input_facts,
                                 **image.planned.doc()}
                    if not alone:
                        image.doc |= {"timings": dict(image.rep.timings),
                                      "warnings": list(image.rep.warnings)}
                g.unmount_all()
    return guest.launch_count - launches_before


def _run(images: Sequence[_Image], settings: ConvertOptions, shared: _Shared, rep: Progress, *,
         alone: bool) -> int:
    """Copy, edit, verify and commit each image, all in one appliance
    launch; fills each image's document. Returns the launches made."""
    for image in images:
        if image.ok:
            with batch.attempt(image, alone=alone):
                o = image.opts
                inputs = [p for p in (o.image.path, o.kernel, o.initrd) if p is not None]
                check_destination(image.outputs.all(), force=o.force, inputs=inputs)
    launches_before = guest.launch_count
    with contextlib.ExitStack() as stack:
        for image in images:
            if image.ok:
                image.staging = stack.enter_context(Staging(image.outputs.all()))
        for image in images:
            if image.ok:
                with batch.attempt(image, alone=alone, clean_up=image.discard):
                    assert image.staging is not None
                    image.fmt, image.input_facts = _stage_image(
                        image.opts, image.staging.temp(image.outputs.image), image.outputs.image,
                        image.staging, image.rep)
        live = [i for i in images if i.ok]
        if not live:
            return 0
        scratch = live[0].staging
        assert scratch is not None

        action = pcihack.action(settings.pci_hack, settings.skip)
        prepared = _in_background(lambda: _timed(rep, "initrd read", lambda: initrd.prepare(
            shared.initrd_in, action=action)))
        payload = None
        if shared.modules_dir is not None:
            modules_dir = shared.modules_dir

            def build_payload() -> ModulePayload:
                # minimal: the guest also needs what the initrd loads at boot,
                # which the repack reads anyway (decompressing it twice would
                # double the memory peak)
                extra = prepared.result().conf_modules if settings.modules_minimal else ()
                with rep.phase("modules payload"):
                    return module_payload.build_payload(
                        modules_dir, shared.version, scratch.scratch("modules.tar"),
                        minimal=settings.modules_minimal, extra_modules=extra)

            payload = _in_background(build_payload)

        repacks: dict[initrd_modules.Addition | None,
                      concurrent.futures.Future[tuple[Path, initrd.RepackResult]]] = {}

        def repack_for(image: _Image) -> concurrent.futures.Future[tuple[Path, initrd.RepackResult]]:
            """One repack per set of drivers to add (the same for images
            whose roots need the same driver), into a scratch file each image
            copies. A repack that adds drivers reads the initrd through a
            file of its own: repacks run at once in threads, and two cannot
            stream from one file offset."""
            assert image.planned is not None
            addition = image.planned.drivers.addition
            if addition not in repacks:
                path = scratch.scratch(f"initrd{len(repacks)}")
                # Opened here, not in the thread: the end of the convert
                # removes its scratch files, and a thread starting late would
                # leave one behind.
                out = stack.enter_context(open_output(path, label=image.outputs.initrd))
                label = image.outputs.initrd

                def repack() -> tuple[Path, initrd.RepackResult]:
                    with contextlib.ExitStack() as source_stack:
                        if addition is None:
                            source = prepared.result()
                        else:
                            f = source_stack.enter_context(
                                open_input(settings.initrd, InitrdError, "an initrd (--initrd)"))
                            source = initrd.prepare(f, action=action)
                        try:
                            result = initrd.finish(source, out, compression=settings.initrd_compression,
                                                   drivers=addition, threads=REPACK_WORKERS)
                            out.close()  # a failed flush is this repack's failure too
                        except OSError as e:  # the input's read errors are InitrdErrors
                            raise write_error(label, e) from e
                    return path, result

                repacks[addition] = _in_background(lambda: _timed(rep, "initrd repack", repack))
            return repacks[addition]

        # The launch runs in this thread (libguestfs errors stay silent only in
        # the thread that made the handle), while the work above proceeds.
        with rep.phase("appliance launch"):
            g = guest.launch([Drive(str(i.staging.temp(i.outputs.image)), readonly=False, format=i.fmt)
                              for i in live if i.staging is not None], rep)
        size = os.fstat(shared.initrd_in.fileno()).st_size
        reserve = size + size // 4
        with g:
            for n, image in enumerate(live):
                with batch.attempt(image, alone=alone, clean_up=image.discard):
                    with image.rep.phase("plan"):
                        image.planned = _plan(g, image.opts, shared.ctx, image.outputs, shared.modules_dir,
                                              prepared.result, writable=True, drive=n)
                    image.planned.tell(image.rep)
                    image.repack = repack_for(image)
                    image.unchanged = _edit(g, image.opts, image.planned, payload, image.repack,
                                            image.rep, image.outputs.image, reserve=reserve)
                g.unmount_all()
        for image in live:
            if image.ok:
                with batch.attempt(image, alone=alone, clean_up=image.discard):
                    _finish(image, shared, payload, action, alone=alone)
    return guest.launch_count - launches_before


def _finish(image: _Image, shared: _Shared, payload: concurrent.futures.Future[ModulePayload] | None,
            action: pcihack.Action, *, alone: bool) -> None:
    """Write the image's initrd and xl config, commit its three outputs, and
    fill its document."""
    assert image.staging is not None and image.planned is not None and image.repack is not None
    rep, outputs, planned = image.rep, image.outputs, image.planned
    repacked, initrd_result = image.repack.result()
    warning = kernel.check_initrd_versions(shared.version, initrd_result.module_versions)
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

    facts: dict[str, dict[str, object]] = {"initrd": initrd_result.as_dict()}
    if payload is not None and any(isinstance(c, InstallModules) for c in planned.plan.changes):
        p = payload.result()
        facts["modules"] = {"files": p.files, "bytes": p.bytes, "absent": list(p.absent)}
    statuses: dict[str, Status] = {"initrd": _initrd_status(action, initrd_result.already_applied,
                                                              done=True)}
    boot_step = next((s for s in planned.plan.steps if s.step == "bootloader"), None)
    if boot_step is not None and boot_step.status == "apply":
        facts["bootloader"] = {"unchanged": image.unchanged}
        if all(isinstance(c, UploadFile) and c.path in image.unchanged for c in boot_step.changes):
            statuses["bootloader"] = "already applied"
    done = planned.plan.executed(facts, statuses)
    image.doc = {
        "success": True,
        "input": image.text,
        "input_facts": image.input_facts,
        "outputs": {"image": str(outputs.image), "initrd": str(outputs.initrd), "cfg": str(outputs.cfg),
                    "format": image.fmt},
        **planned.doc(done),
        # The guest reads /sys/hypervisor/uuid (the pinned uuid) when it can,
        # and falls back to a value built from the pinned MAC otherwise.
        "motherboard_uuid": cfg.uuid,
        "motherboard_uuid_fallback": fallback_uuid(cfg.mac),
    }
    if not alone:
        image.doc |= {"timings": dict(rep.timings), "warnings": list(rep.warnings)}


def _initrd_status(action: pcihack.Action, unchanged: bool, *, done: bool) -> Status:
    """--skip pci leaves pcihack as it is; the drivers may still be added."""
    if unchanged:
        return "skipped" if action == "keep" else "already applied"
    return "applied" if done else "apply"


def _initrd_drivers(opts: ConvertOptions, version: str, prepared: initrd.Prepared,
                    layout: Layout) -> initrd_modules.DriverPlan:
    """Whether the initrd can mount the root under Xen, and what the repack
    adds when it cannot. The kernel's modules tree (--modules-dir, else
    /lib/modules/VERSION) says what is built in and supplies what is added,
    even with --skip modules (which is about the guest); without a tree the
    check sees the initrd alone, and what it lacks is only warned about."""
    tree = opts.modules_dir or Path("/lib/modules") / version
    found = initrd_modules.check(prepared.module_files, tree, layout.root.partition.fstype)
    return initrd_modules.plan(found, tree, version, prepared.module_root(version))


def _timed(rep: Progress, name: str, fn: Callable[[], T]) -> T:
    with rep.phase(name):
        return fn()


def _stage_image(opts: ConvertOptions, img: Path, label: Path, staging: Staging,
                 rep: Progress) -> tuple[str, dict[str, Any]]:
    """Put a copy of the input at the staging name `img`; returns its format
    and the input's facts. A raw file or block device is copied sparsely by
    Python; every other case goes through qemu-img, which skips zeros too,
    never writes its input, reads every qemu format and an iSCSI LUN with
    the same iSCSI client (libiscsi) the appliance uses: no kernel
    initiator, no root, and 8x faster than copying through the emulated
    appliance. A compressed raw image is decompressed straight into `img`
    (raw output) or into a scratch file beside it (qcow2); an OVA's disk
    member is taken out into a scratch file (it is compressed, so small)."""
    image, src = opts.image, opts.image.path
    facts = image.facts()
    if src is not None and image.format == "raw" and opts.format == "raw":
        with rep.phase("copy", total=source_size(src), nbytes=True) as ph:
            written = sparse_copy(src, img, label=label, progress=ph.advance)
            ph.detail = f"({written / 2**20:.0f} MiB of data)"
        return "raw", facts
    if src is None:
        source, in_format = image.iscsi_uri, None
    elif image.packed:
        straight = image.format in COMPRESSED and opts.format == "raw"
        u = unpack.unpack(image, img if straight else staging.scratch("input"), label=label, rep=rep)
        facts = {**facts, "virtual_size": u.virtual_size, "unpacked_format": u.format}
        if straight:
            return "raw", facts
        source, in_format = str(u.path), u.format
    else:
        source, in_format = str(src), qemu_name(image.format)
    what = "iSCSI" if src is None else f"{in_format} to {opts.format}"
    with rep.phase(f"copy ({what})", total=100) as ph:
        qemu_img_convert(source, img, opts.format, in_format, label=label,
                         progress=lambda percent: ph.update(percent, 100))
    if image.packed:  # the unpacked scratch is not needed during the edits
        Path(source).unlink()
    return opts.format, facts


def _edit(g: guest.Guest, opts: ConvertOptions, planned: Planned,
          payload: concurrent.futures.Future[ModulePayload] | None,
          repack: concurrent.futures.Future[tuple[Path, initrd.RepackResult]],
          rep: Progress, label: Path, *, reserve: int) -> list[str]:
    """Apply and verify the plan's guest edits on the mounted output; returns
    the guest files an upload found already there. `reserve`: bytes the
    output directory must also keep free for files written after."""
    plan, ctx = planned.plan, planned.ctx
    install = next((c for c in plan.changes if isinstance(c, InstallModules)), None)
    tarball = payload.result().tarball.stat().st_size if install and payload else 0
    written = sum(len(c.data) for c in plan.changes if isinstance(c, WriteFile))
    uploads = [c for c in plan.changes if isinstance(c, UploadFile)]
    sources: dict[str, Path] = {}
    if uploads:
        # the initrd the guest's menu boots is the repacked one: wait for it
        # (a second or two more than a direct boot) so that the boot
        # partition's room is known before anything is written
        with rep.phase("initrd repack (wait)"):
            repacked = repack.result()[0]
        sources = {c.path: opts.kernel if c.source == "kernel" else repacked for c in uploads}
        written += sum(os.path.getsize(source) for source in sources.values())
        _check_boot_room(g, sources, planned.layout)
    # the filesystem inside the image needs room for metadata and its journal
    ensure_space(label.parent, tarball + tarball // 8 + written + reserve + 32 * 2**20, label=label)
    if repack.done():  # a failed repack stops the convert before anything is written
        repack.result()
    with rep.phase("edits"):
        g.make_writable([c.path for c in plan.changes if isinstance(c, WriteFile | UploadFile)])
        for c in plan.changes:
            if isinstance(c, WriteFile):
                g.write(c.path, c.data, c.mode)
    unchanged = _upload(g, sources, rep) if sources else []
    if install is not None:
        assert payload is not None, "modules step planned although skipped"
        p = payload.result()
        size = p.tarball.stat().st_size
        with rep.phase("modules transfer", total=size, nbytes=True) as ph:
            g.tar_in(p.tarball, guest_modules_dir(install.version),
                     progress=lambda sent: ph.update(sent, size))
            ph.detail = f"({p.files} files, {p.bytes / 2**20:.0f} MiB)"
    with rep.phase("verify"):
        g.sync()
        status = postconditions(read_snapshot(g, ctx, skip=opts.skip), ctx, opts.skip)
        failed = [name for name, ok in status.items() if not ok]
        if failed:
            raise VerifyError(f"after the edits, these postconditions do not hold: {', '.join(failed)}")
    return unchanged


def _upload(g: guest.Guest, sources: dict[str, Path], rep: Progress) -> list[str]:
    """Copy each host file of `sources` to its guest path; returns the guest
    paths that already held those bytes (not sent again)."""
    total = sum(os.path.getsize(source) for source in sources.values())
    unchanged = []
    with rep.phase("boot files", total=total, nbytes=True) as ph:
        sent = 0
        for path, source in sources.items():
            if not g.upload(source, path):
                unchanged.append(path)
            sent += os.path.getsize(source)
            ph.update(sent, total)
        ph.detail = f"({len(sources)} files, {total / 2**20:.0f} MiB" + (
            f", {len(unchanged)} already there)" if unchanged else ")")
    return unchanged


def _check_boot_room(g: guest.Guest, sources: dict[str, Path], layout: Layout) -> None:
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


def _identity(opts: ConvertOptions, layout: Layout, snap: Snapshot) -> identity.Identity:
    x = opts.xl
    seed = layout.root.partition.uuid or str(opts.image)
    return identity.choose(snap, seed, mac=x.mac, dom_uuid=x.uuid, new_identity=x.new_identity)


def _xl_config(opts: ConvertOptions, layout: Layout, outputs: OutputPaths, libc: glibc.Glibc,
               who: identity.Identity) -> xlcfg.XlConfig:
    x = opts.xl
    return xlcfg.XlConfig(
        name=x.name or outputs.image.stem,
        kernel=str(opts.kernel.absolute()),
        ramdisk=str(outputs.initrd.absolute()),
        root_part=layout.root.partition.number,
        memory=x.memory,
        vcpus=x.vcpus,
        uuid=who.uuid,
        mac=who.mac,
        bridge=x.bridge,
        disk=str(outputs.image.absolute()),
        disk_format=opts.format,
        data_disks=tuple(str(d.absolute()) for d in x.data_disks),
        vsyscall_emulate=libc.vsyscall_emulate,
        boot=x.boot,
        guest_type=x.guest_type,
    )

