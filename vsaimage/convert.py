"""convert: inspect → plan → apply → verify, in one appliance session on a
staged copy of the input.

The input is only ever read (a host-side sparse copy, or a read-only drive);
all edits happen on the copy, which is renamed into place with its initrd and
xl config only when every postcondition holds. Host-side work that does not
need the guest (reading the initrd, the modules payload) runs while the
appliance boots; the initrd is written once the plan knows the root
filesystem, whose driver it must hold, while the guest is edited.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from vsaimage import (
    __version__,
    cpio,
    glibc,
    guest,
    identity,
    initrd,
    initrd_modules,
    kernel,
    module_payload,
    unpack,
    xlcfg,
)
from vsaimage.diskformat import COMPRESSED, qemu_name
from vsaimage.edits import EditContext, InstallModules, Snapshot, Status, StepPlan, WriteFile, pcihack
from vsaimage.edits.mobo_uuid import fallback_uuid
from vsaimage.errors import BadInput, InitrdError, KernelError, VerifyError
from vsaimage.inspect import Layout, find_layout, partition_facts, read_snapshot
from vsaimage.module_payload import ModulePayload
from vsaimage.options import ConvertOptions
from vsaimage.output import (
    OutputPaths,
    Staging,
    check_destination,
    ensure_space,
    qemu_img_convert,
    source_size,
    sparse_copy,
    write_bytes,
)
from vsaimage.plan import HostItem, Plan, build, guest_modules_dir, postconditions
from vsaimage.report import Reporter
from vsaimage.source import Drive, read_input

T = TypeVar("T")

# Guest files read for the xl config rather than for an edit.
GUEST_FACTS = (*glibc.READS, *identity.READS)


def _in_background(fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    """Run `fn` in a daemon thread: an interrupted convert must not wait for a
    compression to finish before it can clean up and exit."""
    fut: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
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


def _read_initrd(path: Path) -> bytes:
    """The --initrd's bytes, refused at once when they are no initrd at all:
    the repack proper runs during the appliance launch, and its error would
    come only after the copy, the launch and the plan."""
    data = read_input(path, InitrdError, "an initrd (--initrd)")
    try:
        cpio.split(data)
    except InitrdError as e:
        raise InitrdError(f"{path}: {e.message}", hint=e.hint) from None
    return data


def dry_run(opts: ConvertOptions, rep: Reporter) -> dict[str, Any]:
    version = opts.kernel_version or kernel.kernel_version(opts.kernel)
    initrd_in = _read_initrd(opts.initrd)
    modules_dir = _modules_dir(opts, version)
    outputs = OutputPaths.from_option(opts.output)
    ctx = _edit_context(opts, version)
    prepared = initrd.prepare(initrd_in, action=pcihack.action(opts.pci_hack, opts.skip))
    with unpack.readable(opts.image, rep) as (drive, facts):
        with rep.phase("appliance launch"):
            g = guest.launch([drive], warn=rep.warn)
        with g, rep.phase("plan"):
            planned = _plan(g, opts, ctx, outputs, modules_dir, lambda: prepared, writable=False)
    planned.warn(rep)
    return {
        "success": True, "command": "convert", "dry_run": True, "tool_version": __version__,
        "input": str(opts.image), "input_facts": facts, "kernel_version": version, **planned.doc(),
    }


@dataclass(frozen=True)
class Planned:
    """Everything a convert will do, decided before anything is written."""

    layout: Layout
    plan: Plan
    cfg: xlcfg.XlConfig
    who: identity.Identity
    libc: glibc.Glibc
    drivers: initrd_modules.DriverPlan

    def warn(self, rep: Reporter) -> None:
        """Warnings in the plan's details (an fstab entry naming a disk Xen
        will not have, a MAC the guest's network set-up does not expect)
        become the run's warnings."""
        items: list[HostItem | StepPlan] = [*self.plan.before, *self.plan.steps, *self.plan.after]
        for item in items:
            warnings = item.details.get("warnings")
            for w in warnings if isinstance(warnings, list) else ():
                rep.warn(str(w))

    def doc(self, plan: Plan | None = None) -> dict[str, Any]:
        """The result document's part that the plan (or, when given, the
        executed plan) decides."""
        done = plan or self.plan
        return {
            "root_partition": self.layout.root.partition.number,
            "boot_partition": self.layout.boot.partition.number if self.layout.boot else None,
            "steps": done.as_dicts(), "output_files": done.outputs, "guest_paths": done.guest_paths,
            "xl": {"name": self.cfg.name, **self.who.as_dict()},
            "glibc": self.libc.as_dict(),
        }


def _plan(g: guest.Guest, opts: ConvertOptions, ctx: EditContext, outputs: OutputPaths,
          modules_dir: Path | None, prepared: Callable[[], initrd.Prepared], *,
          writable: bool) -> Planned:
    """Find the layout and mount it as the VSA does (writable for a convert),
    read what the edits and the xl config need, and plan every item.
    `prepared` gives the initrd as read (waiting for it if need be)."""
    layout = find_layout(g, str(opts.image), root_part=opts.roles.root_part,
                         boot_part=opts.roles.boot_part, writable=writable)
    ctx = replace(ctx, partitions=partition_facts(layout))
    snap = read_snapshot(g, ctx, skip=opts.skip, extra=GUEST_FACTS)
    libc, who = glibc.detect(snap), _identity(opts, layout, snap)
    cfg = _xl_config(opts, layout, outputs, libc, who)
    drivers = _initrd_drivers(opts, ctx.kernel_version or "", prepared(), layout)
    plan = _full_plan(opts, build(snap, ctx, opts.skip), cfg, libc, who, outputs, modules_dir,
                      prepared(), drivers)
    return Planned(layout, plan, cfg, who, libc, drivers)


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
    if drivers.unavailable:
        initrd_details["warnings"] = drivers.warnings(opts.initrd)
    initrd_item = HostItem("initrd", title, str(outputs.initrd),
                           _initrd_status(action, prepared.done_nothing and add is None, done=False),
                           initrd_details)
    xl_details: dict[str, object] = {
        "name": cfg.name, **who.as_dict(), "root": f"/dev/xvda{cfg.root_part}",
        "vsyscall_emulate": cfg.vsyscall_emulate, "glibc": libc.why}
    if who.warning:
        xl_details["warnings"] = [who.warning]
    xl = HostItem("xl", "xl config", str(outputs.cfg), details=xl_details)
    return replace(guest_plan, steps=steps).with_host(before=[copy], after=[initrd_item, xl])


def convert(opts: ConvertOptions, rep: Reporter) -> dict[str, Any]:
    # Everything that can be refused cheaply is refused before any work.
    version = opts.kernel_version or kernel.kernel_version(opts.kernel)
    if not opts.kernel.is_file():
        raise KernelError(f"{opts.kernel}: no such file (--kernel)")
    initrd_in = _read_initrd(opts.initrd)
    modules_dir = _modules_dir(opts, version)
    outputs = OutputPaths.from_option(opts.output)
    inputs = [p for p in (opts.image.path, opts.kernel, opts.initrd) if p is not None]
    check_destination(outputs.all(), force=opts.force, inputs=inputs)
    ctx = _edit_context(opts, version)
    launches_before = guest.launch_count

    with Staging(outputs.all()) as staging:
        img = staging.temp(outputs.image)
        fmt, input_facts = _stage_image(opts, img, outputs.image, staging, rep)

        action = pcihack.action(opts.pci_hack, opts.skip)
        prepared = _in_background(lambda: _timed(rep, "initrd read", lambda: initrd.prepare(
            initrd_in, action=action)))
        payload = None
        if modules_dir is not None:
            def build_payload() -> ModulePayload:
                # minimal: the guest also needs what the initrd loads at boot,
                # which the repack reads anyway (decompressing it twice would
                # double the memory peak)
                extra = prepared.result().conf_modules if opts.modules_minimal else ()
                with rep.phase("modules payload"):
                    return module_payload.build_payload(
                        modules_dir, version, staging.scratch("modules.tar"),
                        minimal=opts.modules_minimal, extra_modules=extra)

            payload = _in_background(build_payload)

        # The launch runs in this thread (libguestfs errors stay silent only in
        # the thread that made the handle), while the work above proceeds.
        with rep.phase("appliance launch"):
            g = guest.launch([Drive(str(img), readonly=False, format=fmt)], warn=rep.warn)

        with g:
            with rep.phase("plan"):
                planned = _plan(g, opts, ctx, outputs, modules_dir, prepared.result, writable=True)
            planned.warn(rep)
            repack = _in_background(lambda: _timed(rep, "initrd repack", lambda: initrd.finish(
                prepared.result(), compression=opts.initrd_compression,
                drivers=planned.drivers.addition)))
            _edit(g, opts, ctx, planned.plan, payload, repack, rep, outputs.image,
                  reserve=len(initrd_in) + len(initrd_in) // 4)
        initrd_out, initrd_result = repack.result()
        warning = kernel.check_initrd_versions(version, initrd_result.module_versions)
        if warning:
            rep.warn(warning)
        write_bytes(staging.temp(outputs.initrd), initrd_out, label=outputs.initrd)
        cfg = planned.cfg
        write_bytes(staging.temp(outputs.cfg), xlcfg.render(cfg).encode(), label=outputs.cfg)
        staging.commit()

    facts: dict[str, dict[str, object]] = {"initrd": initrd_result.as_dict()}
    if payload is not None and any(isinstance(c, InstallModules) for c in planned.plan.changes):
        p = payload.result()
        facts["modules"] = {"files": p.files, "bytes": p.bytes, "absent": list(p.absent)}
    done = planned.plan.executed(
        facts, {"initrd": _initrd_status(action, initrd_result.already_applied, done=True)})
    return {
        "success": True,
        "command": "convert",
        "tool_version": __version__,
        "input": str(opts.image),
        "input_facts": input_facts,
        "outputs": {"image": str(outputs.image), "initrd": str(outputs.initrd),
                    "cfg": str(outputs.cfg), "format": fmt},
        "kernel": {"path": str(opts.kernel.absolute()), "version": version},
        **planned.doc(done),
        # The guest reads /sys/hypervisor/uuid (the pinned uuid) when it can,
        # and falls back to a value built from the pinned MAC otherwise.
        "motherboard_uuid": cfg.uuid,
        "motherboard_uuid_fallback": fallback_uuid(cfg.mac),
        "appliance_launches": guest.launch_count - launches_before,
        "timings": dict(rep.timings),
        "warnings": list(rep.warnings),
    }


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


def _timed(rep: Reporter, name: str, fn: Callable[[], T]) -> T:
    with rep.phase(name):
        return fn()


def _stage_image(opts: ConvertOptions, img: Path, label: Path, staging: Staging,
                 rep: Reporter) -> tuple[str, dict[str, Any]]:
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


def _edit(g: guest.Guest, opts: ConvertOptions, ctx: EditContext, plan: Plan,
          payload: concurrent.futures.Future[ModulePayload] | None,
          repack: concurrent.futures.Future[tuple[bytes, initrd.RepackResult]],
          rep: Reporter, label: Path, *, reserve: int) -> None:
    """Apply and verify the plan's guest edits on the mounted output.
    `reserve`: bytes the output directory must also keep free for files
    written after."""
    install = next((c for c in plan.changes if isinstance(c, InstallModules)), None)
    tarball = payload.result().tarball.stat().st_size if install and payload else 0
    written = sum(len(c.data) for c in plan.changes if isinstance(c, WriteFile))
    # the filesystem inside the image needs room for metadata and its journal
    ensure_space(label.parent, tarball + tarball // 8 + written + reserve + 32 * 2**20, label=label)
    if repack.done():  # a failed repack stops the convert before anything is written
        repack.result()
    with rep.phase("edits"):
        g.make_writable([c.path for c in plan.changes if isinstance(c, WriteFile)])
        for c in plan.changes:
            if isinstance(c, WriteFile):
                g.write(c.path, c.data, c.mode)
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
    )

