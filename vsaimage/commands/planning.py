"""A convert's plan of one image: its partition roles found and mounted in the
launched appliance, the files the edits and the xl config need read, and
every item decided (the disk copy, each guest edit, the initrd, the xl
config) before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from vsaimage.commands import inplace, room
from vsaimage.commands.options import ConvertOptions
from vsaimage.edits import EditContext, InstallModules, Snapshot, Status, pcihack
from vsaimage.edits.modules import guest_dir
from vsaimage.errors import BadInput, InitrdError, KernelError
from vsaimage.guest.appliance import Guest
from vsaimage.guest.layout import Layout, layout_lines, mount_layout, partition_facts
from vsaimage.initrd import mdadm
from vsaimage.initrd import modules as initrd_modules
from vsaimage.initrd.repack import Prepared
from vsaimage.kmod import kernel
from vsaimage.kmod import payload as module_payload
from vsaimage.model import BootFiles
from vsaimage.outputs.staging import OutputPaths
from vsaimage.plan import HostItem, Plan, build, read_snapshot
from vsaimage.progress import Progress
from vsaimage.vsa import cmdline, glibc, slots, userland
from vsaimage.xen import identity, xlcfg

# Guest files read for the xl config rather than for an edit.
GUEST_FACTS = (*glibc.READS, *identity.READS, *userland.READS, *cmdline.READS, *slots.READS)


@dataclass(frozen=True)
class Planned:
    """Everything a convert will do to one image, decided before anything is
    written."""

    layout: Layout
    ctx: EditContext  # with this image's partitions and boot files
    plan: Plan
    cfg: xlcfg.XlConfig
    who: identity.Identity
    libc: glibc.Glibc
    drivers: initrd_modules.DriverPlan
    land: userland.Userland
    md_array: str | None  # the mdadm.conf line the repack adds for the root's md array
    modules: room.Choice | None  # the modules payload the guest gets, and why
    args: cmdline.KernelArgs  # the VSA's own kernel arguments

    def tell(self, rep: Progress) -> None:
        """The plan's warnings (an fstab entry naming a disk Xen will not
        have, a MAC the guest's network set-up does not expect) become the
        run's; with -v, the roles and every change are detail lines."""
        for line in [*layout_lines(self.layout), *self.plan.lines()]:
            rep.debug(line)
        for warning in self.plan.warnings:
            rep.warn(warning)


def plan_image(g: Guest, opts: ConvertOptions, ctx: EditContext, outputs: OutputPaths,
               modules_dir: Path | None, prepared: Callable[[], Prepared], *,
               writable: bool, drive: int) -> Planned:
    """Find the layout of the appliance's `drive`-th disk and mount it as the
    VSA does (writable for a convert), read what the edits and the xl config
    need, and plan every item. `prepared` gives the initrd as read (waiting
    for it if need be)."""
    roles = opts.roles
    layout = mount_layout(g, str(opts.image), root_part=roles.root_part, boot_part=roles.boot_part,
                          writable=writable, drive=drive, disks=tuple(map(str, roles.disks(opts.image))),
                          degraded=roles.degraded)
    if opts.in_place:
        inplace.check_layout(opts.image, layout)
    ctx = replace(ctx, partitions=partition_facts(layout))
    snap = read_snapshot(g, ctx, skip=opts.skip, extra=GUEST_FACTS)
    _check_data_disks(opts, slots.find(snap))
    land = userland.detect(snap)
    libc, who = glibc.detect(snap, userland_32bit=land.is_32bit), _identity(opts, layout, snap)
    kernel_note = _check_kernel_runs(opts, ctx.kernel_version or "", land)
    args = kernel_args(snap, libc.vsyscall_emulate)
    cfg = xl_config(opts, outputs, root_part=layout.root.partition.number, uuid=who.uuid, mac=who.mac,
                    vsyscall_emulate=libc.vsyscall_emulate, root_array=layout.root.partition.array,
                    vendor_args=args.kept)
    if cfg.boot != "direct":
        ctx = replace(ctx, boot=_boot_files(cfg, layout, ctx.kernel_version or ""))
    drivers = initrd_drivers(opts, ctx.kernel_version or "", prepared(), layout.root.partition.fstype,
                             md_needs(layout))
    array = md_line(layout, opts.initrd, prepared())
    guest_plan = build(snap, ctx, opts.skip)
    modules = _modules(g, opts, guest_plan, modules_dir, prepared())
    plan = _full_plan(opts, guest_plan, cfg, libc, who, args, outputs, modules_dir, prepared(), drivers,
                      land, kernel_note, array, modules)
    return Planned(layout, ctx, plan, cfg, who, libc, drivers, land, array, modules, args)


def _check_data_disks(opts: ConvertOptions, found: slots.Slots) -> None:
    """No more data disks than the VSA has slots for: one more would have
    no /dev/scsi name it looks for."""
    given, have = len(opts.xl.data_disks), len(found.data)
    if given > have:
        raise BadInput(f"{opts.image}: {given} --data-disk given, but the VSA has {have} data-disk slots "
                       f"({found.source})", hint=f"give at most {have}")


def kernel_args(snap: Snapshot, vsyscall_emulate: bool) -> cmdline.KernelArgs:
    """The VSA's own arguments (its grub menu's default entry) and what
    becomes of each under Xen, beside those vsaimage adds."""
    configs = {p: text for p in cmdline.READS if (text := snap.text(p)) is not None}
    return cmdline.from_menus(configs, xlcfg.own_args(vsyscall_emulate))


def _modules(g: Guest, opts: ConvertOptions, guest_plan: Plan, modules_dir: Path | None,
             prepared: Prepared) -> room.Choice | None:
    """Which modules payload goes into the guest (--modules), measured
    against the room in its filesystem; None when no modules are sent."""
    install = next((c for c in guest_plan.changes if isinstance(c, InstallModules)), None)
    if install is None or modules_dir is None:
        return None

    def measure(minimal: bool) -> module_payload.PayloadSize:
        return module_payload.measure(modules_dir, install.version, minimal=minimal,
                                      extra_modules=prepared.conf_modules if minimal else ())

    return room.choose_modules(g, guest_dir(install.version), opts.modules, measure)


def _check_kernel_runs(opts: ConvertOptions, version: str, land: userland.Userland) -> str | None:
    """A 32-bit userland needs a kernel that runs 32-bit programs: refused
    when its config says it does not, or cannot be read, unless
    --force-kernel (then a warning). Returns the warning, if any."""
    if not land.is_32bit:
        return None
    ok, why = kernel.runs_32bit(opts.kernel, version)
    if ok:
        return None
    said = (f"{opts.kernel} cannot run the guest's 32-bit userland ({land.why}): {why}" if ok is False else
            f"{opts.kernel}: cannot tell whether it runs the guest's 32-bit userland ({land.why}): {why}")
    if not opts.force_kernel:
        raise KernelError(said, hint="give a kernel built with CONFIG_IA32_EMULATION=y (Debian's amd64 "
                                     "kernels are), or --force-kernel")
    return f"{said} (--force-kernel)"


def initrd_status(action: pcihack.Action, unchanged: bool, *, done: bool) -> Status:
    """--skip pci leaves pcihack as it is; the drivers may still be added."""
    if unchanged:
        return "skipped" if action == "keep" else "already applied"
    return "applied" if done else "apply"


def _boot_files(cfg: xlcfg.XlConfig, layout: Layout, version: str) -> BootFiles:
    """What the guest's own menu boots: the kernel and initrd of a direct
    boot, with its command line, from the filesystem holding /boot."""
    holder = layout.boot or layout.root
    return BootFiles(cfg.boot, version, xlcfg.command_line(cfg),
                     holder.partition.uuid, "" if layout.boot else "/boot")


def _full_plan(opts: ConvertOptions, guest_plan: Plan, cfg: xlcfg.XlConfig, libc: glibc.Glibc,
               who: identity.Identity, args: cmdline.KernelArgs, outputs: OutputPaths,
               modules_dir: Path | None, prepared: Prepared, drivers: initrd_modules.DriverPlan,
               land: userland.Userland, kernel_note: str | None, array: str | None,
               modules: room.Choice | None) -> Plan:
    """The guest steps with the host items around them: the disk copy first,
    the initrd and the xl config after; the modules step names its source,
    the payload chosen and why."""
    source: dict[str, object] = {"source": str(modules_dir)}
    if modules is not None:
        source |= {"minimal": modules.minimal, "payload": str(modules.size), "why": modules.why,
                   "transport": module_payload.transport(minimal=modules.minimal)}
    steps = tuple(replace(s, details={**s.details, **source})
                  if s.step == "modules" and modules_dir is not None else s for s in guest_plan.steps)
    if opts.in_place:
        copy = HostItem("in-place", "The disk itself, converted where it is (no copy)", str(opts.image),
                        "already applied" if not guest_plan.changes else "apply",
                        details={"format": opts.format})
    else:
        copy = HostItem("copy", "The converted disk (a copy of the input)", str(outputs.image),
                        details={"input": str(opts.image), "format": opts.format})
    action, add = prepared.action, drivers.addition
    title = pcihack.TITLES[action] + (f"; adds {', '.join(add.names)}" if add else "") + (
        f"; {mdadm.CONF} names {cfg.root}" if array else "")
    initrd_details: dict[str, object] = {
        "input": str(opts.initrd), "pcihack": action,
        "compression": opts.initrd_compression or "as the input", "drivers": drivers.as_dict(),
        **({"md_array": array.strip()} if array else {})}
    initrd_item = HostItem("initrd", title, str(outputs.initrd),
                           initrd_status(action, prepared.done_nothing and add is None and array is None,
                                         done=False),
                           initrd_details, tuple(drivers.warnings(opts.initrd)))
    xl_details: dict[str, object] = {
        "name": cfg.name, **who.as_dict(), "root": cfg.root,
        "vsyscall_emulate": cfg.vsyscall_emulate, "glibc": libc.why, "boot": cfg.boot,
        "type": cfg.guest_type, "userland": land.why, "command_line": xlcfg.command_line(cfg),
        "kernel_args": arguments_doc(args, cfg.vsyscall_emulate, cfg.user_args)}
    if opts.xl.kept_from is not None:
        xl_details["kept"] = {"from": str(opts.xl.kept_from), "settings": sorted(opts.xl.kept)}
    xl = HostItem("xl", "xl config", str(outputs.cfg), details=xl_details,
                  warnings=tuple(w for w in (who.warning, kernel_note, _lun_warning(opts)) if w))
    return replace(guest_plan, steps=steps).with_host(before=[copy], after=[initrd_item, xl])


def arguments_doc(args: cmdline.KernelArgs, vsyscall_emulate: bool,
                  extra: Sequence[str] = ()) -> dict[str, object]:
    """Each argument of the guest's command line and where it comes from:
    the VSA's kept and dropped (with why), vsaimage's, --extra's."""
    return {**args.as_dict(), "added": list(xlcfg.own_args(vsyscall_emulate)), "extra": list(extra)}


def initrd_drivers(opts: ConvertOptions, version: str, prepared: Prepared, root_fstype: str,
                   md: tuple[tuple[str, ...], ...] = ()) -> initrd_modules.DriverPlan:
    """Whether the initrd can mount a root of `root_fstype` (on an md array
    needing the drivers `md`) under Xen, and what the repack adds when it
    cannot. The kernel's modules tree (--modules-dir, else
    /lib/modules/VERSION) says what is built in and supplies what is added,
    even with --skip modules (which is about the guest); without a tree the
    check sees the initrd alone, and what it lacks is only warned about."""
    tree = opts.modules_dir or kernel.modules_tree(version)
    found = initrd_modules.check(prepared.module_files, tree, root_fstype, md)
    return initrd_modules.plan(found, tree, version, prepared.module_root(version))


def md_needs(layout: Layout) -> tuple[tuple[str, ...], ...]:
    """The drivers the root's md array needs, if it is on one."""
    return mdadm.needs(layout.array.level) if layout.array is not None else ()


def md_line(layout: Layout, initrd: Path, prepared: Prepared) -> str | None:
    """The mdadm.conf line that has the initrd assemble the root's array
    under the name the guest boots from; refused when it has no mdadm."""
    a = layout.array
    if a is None and not layout.root.partition.member:
        return None
    lacking = mdadm.missing(prepared.members)
    name = layout.root.partition.array
    if lacking:
        raise InitrdError(f"{initrd}: the root is on md array {name}, and the initrd has no "
                          f"{' and no '.join(lacking)} to assemble it",
                          hint="install mdadm on the dom0 (its initramfs hook puts it into the initrd), "
                               "run update-initramfs -u, and give that initrd")
    if a is None:  # a lone member (--degraded): mdadm finds it by its superblock
        return None
    return mdadm.array_line(a.name, a.metadata, a.uuid)


def _identity(opts: ConvertOptions, layout: Layout, snap: Snapshot) -> identity.Identity:
    x = opts.xl
    seed = layout.root.partition.uuid or str(opts.image)
    kept = f"{x.kept_from} (kept)" if x.kept_from is not None else ""
    given = (kept if "mac" in x.kept else "--mac", kept if "uuid" in x.kept else "--uuid")
    return identity.choose(snap, seed, mac=x.mac, dom_uuid=x.uuid, new_identity=x.new_identity, given=given)


def _system_disk(opts: ConvertOptions, outputs: OutputPaths) -> tuple[str, str]:
    """(target, hotplug script) of the xl config's xvda: the output, or in
    place the disk itself (an iSCSI LUN through Xen's block-iscsi)."""
    if not opts.in_place:
        return str(outputs.image.absolute()), ""
    image = opts.image
    if image.path is not None:
        return str(image.path.absolute()), ""
    assert image.iscsi_target is not None and image.iscsi_server is not None
    iqn = image.iscsi_target.rsplit("/", 1)[0]
    return xlcfg.iscsi_target(iqn, image.iscsi_server.removeprefix("tcp:")), xlcfg.BLOCK_ISCSI


def _lun_warning(opts: ConvertOptions) -> str | None:
    """Xen's block-iscsi attaches LUN 0 of its target, by an IP portal."""
    target, server = opts.image.iscsi_target, opts.image.iscsi_server
    if not opts.in_place or target is None or server is None:
        return None
    lun, host = target.rsplit("/", 1)[1], server.removeprefix("tcp:").rsplit(":", 1)[0]
    if lun == "0" and re.fullmatch(r"[0-9.]+", host):
        return None
    return (f"Xen's {xlcfg.BLOCK_ISCSI} script attaches LUN 0 of a target named by an IP address: for LUN "
            f"{lun} at {host}, attach it on the dom0 and put its device in the config's xvda line")


def check_xl_settings(opts: ConvertOptions, outputs: OutputPaths) -> None:
    """What the xl config takes from the options, refused before any work
    when it cannot take it (the guest's own values do not matter here)."""
    xlcfg.check_settings(xl_config(opts, outputs, root_part=1, uuid="", mac="", vsyscall_emulate=True))


def xl_config(opts: ConvertOptions, outputs: OutputPaths, *, root_part: int, uuid: str, mac: str,
              vsyscall_emulate: bool, root_array: str = "",
              vendor_args: tuple[str, ...] = ()) -> xlcfg.XlConfig:
    """The xl config of an image: the options, with what the guest decides."""
    x = opts.xl
    disk, script = _system_disk(opts, outputs)
    return xlcfg.XlConfig(
        name=x.name or outputs.image.stem,
        kernel=str(opts.kernel.absolute()),
        ramdisk=str(outputs.initrd.absolute()),
        root_part=root_part,
        memory=x.memory,
        vcpus=x.vcpus,
        uuid=uuid,
        mac=mac,
        bridge=x.bridge,
        disk=disk,
        disk_script=script,
        disk_format=opts.format,
        data_disks=tuple(str(d.absolute()) for d in x.data_disks),
        vsyscall_emulate=vsyscall_emulate,
        boot=x.boot,
        guest_type=x.guest_type,
        system_disks=tuple(str(d.absolute()) for d in outputs.disks),
        root_array=root_array,
        vendor_args=vendor_args,
        user_args=x.extra,
    )
