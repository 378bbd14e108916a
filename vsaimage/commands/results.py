"""The result documents of --json, built here and nowhere else, so that a
convert, a dry run and a batch say the same things under the same keys (the
human tables of cli/render.py are drawn from these documents too).

A command's document is its part shared by every image (`tool_version`,
what ran, the time it took and its warnings) and, for each image, that
image's part; a single image puts both in one document, a batch lists the
images' parts under `images`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict

from vsaimage import __version__
from vsaimage.commands.batch import Item
from vsaimage.commands.options import XlOptions
from vsaimage.commands.planning import Planned
from vsaimage.edits.bootloader import BootLoader
from vsaimage.edits.mobo_uuid import fallback_uuid
from vsaimage.guest.layout import Layout
from vsaimage.model import Snapshot, Status
from vsaimage.outputs.staging import OutputPaths
from vsaimage.plan import TITLES, Plan
from vsaimage.progress import Progress


class EditRow(TypedDict):
    """One edit's status on an image, as inspect and verify list them."""

    step: str
    title: str
    status: Status
    details: NotRequired[dict[str, object]]


def record(rep: Progress) -> dict[str, Any]:
    """What a run (or one image of a batch) recorded while it worked."""
    return {"timings": dict(rep.timings), "warnings": list(rep.warnings)}


def single(command: str, shared: Mapping[str, Any], image: Mapping[str, Any]) -> dict[str, Any]:
    """The document of a command on one image: its shared part and the
    image's, side by side."""
    return {"success": image["success"], "command": command, **shared, **image}


def batch(command: str, items: Sequence[Item], docs: Sequence[dict[str, Any]],
          shared: Mapping[str, Any]) -> dict[str, Any]:
    """The document of a batch: every image's own document (its `success`,
    and its `error` when it failed) in the order given, the inputs that
    failed, and `shared`: what all images have in common."""
    failed = [i.text for i, d in zip(items, docs, strict=True) if not d.get("success")]
    return {"success": not failed, "command": command, "batch": True, **shared,
            "images": list(docs), "failed": failed}


def failed_image(item: Item) -> dict[str, Any]:
    """An image of a batch that failed: its error, and what it recorded."""
    assert item.failure is not None
    return {"success": False, "input": item.text, "error": item.failure.as_dict(), **record(item.rep)}


# --- convert ------------------------------------------------------------------


def convert_shared(*, kernel_path: str, kernel_version: str, dry_run: bool, launches: int,
                   rep: Progress) -> dict[str, Any]:
    """What every image of a convert (or a dry run) has in common."""
    return {"tool_version": __version__, "dry_run": dry_run,
            "kernel": {"path": kernel_path, "version": kernel_version},
            "appliance_launches": launches, **record(rep)}


def convert_image(text: str, input_facts: Mapping[str, Any], outputs: OutputPaths, fmt: str,
                  planned: Planned, done: Plan, xl: XlOptions, *, in_place: bool) -> dict[str, Any]:
    """One image of a convert: `done` is its plan as carried out, or (a dry
    run) as planned; the outputs are those it wrote, or would write (in
    place, the disk is the input itself, and `xl` says what the config it
    replaces gave)."""
    cfg, root = planned.cfg, planned.layout.root.partition
    return {
        "success": True,
        "input": text,
        "input_facts": dict(input_facts),
        "in_place": in_place,
        "outputs": {"image": text if in_place else str(outputs.image), "initrd": str(outputs.initrd),
                    "cfg": str(outputs.cfg), "format": fmt,
                    "system_disks": [text] if in_place else [str(p) for p in outputs.system_disks]},
        **({"kept_from_config": {"config": str(xl.kept_from), "settings": sorted(xl.kept)}}
           if xl.kept_from is not None else {}),
        "root_partition": None if root.array else root.number,
        "root_device": cfg.root,
        "boot_partition": planned.layout.boot.partition.number if planned.layout.boot else None,
        "boot_in_root": planned.layout.boot_in_root,
        "steps": done.as_dicts(), "output_files": done.outputs, "guest_paths": done.guest_paths,
        "xl": {"name": cfg.name, **planned.who.as_dict(), "boot": cfg.boot, "type": cfg.guest_type},
        "glibc": planned.libc.as_dict(),
        "userland": planned.land.as_dict(),
        # The guest reads /sys/hypervisor/uuid (the pinned uuid) when it can,
        # and falls back to a value built from the pinned MAC otherwise.
        "motherboard_uuid": cfg.uuid,
        "motherboard_uuid_fallback": fallback_uuid(cfg.mac),
    }


# --- inspect, verify, initrd -----------------------------------------------------------


def common(*, launches: int | None = None, rep: Progress | None = None) -> dict[str, Any]:
    """What the documents of inspect, verify and initrd share: the tool's
    version; for a batch, the launches and what the run recorded."""
    doc: dict[str, Any] = {"tool_version": __version__}
    if launches is not None:
        doc["appliance_launches"] = launches
    return doc | (record(rep) if rep is not None else {})


def layout_doc(image: str, layout: Layout, facts: Mapping[str, Any], notice: str | None) -> dict[str, Any]:
    """An image's partitions and roles, and the input's own facts;
    `notice`: the line saying the VSA boots a slot that is not converted."""
    doc = {
        "image": image,
        "input_facts": dict(facts),
        "partitions": [p.as_dict() for p in layout.partitions],
        "root": layout.root.as_dict(),
        "boot": layout.boot.as_dict() if layout.boot else None,
        "boot_in_root": layout.boot_in_root,
        "system_slots": list(layout.slots),
        "unconverted_slot": notice,
    }
    if layout.array is not None:
        a = layout.array
        members = [f"{layout.disks[m.disk]} partition {m.partition}" for m in a.members]
        doc["root_array"] = {"name": a.name, "uuid": a.uuid, "metadata": a.metadata, "level": a.level,
                             "raid_disks": a.raid_disks, "system_disks": list(layout.disks),
                             "members": members}
    return doc


def edit_rows(status: Mapping[str, bool], snap: Snapshot) -> list[EditRow]:
    """One row per edit; the bootloader step is "not used" on a disk that
    boots directly (no menu of vsaimage's in /boot)."""
    def said(name: str, ok: bool) -> Status:
        if name == BootLoader.name and not BootLoader.in_use(snap):
            return "not used"
        return "applied" if ok else "not applied"

    return [{"step": name, "title": TITLES[name], "status": said(name, ok)} for name, ok in status.items()]


def verify_image(layout: Mapping[str, Any], rows: Sequence[EditRow]) -> dict[str, Any]:
    """An image's verify part: every row, and the steps not in place."""
    missing = [r["step"] for r in rows if r["status"] == "not applied"]
    return {"success": not missing, **layout, "edits": list(rows), "missing": missing}


def md_members_row(layout: Layout) -> EditRow:
    """The root's md array: its members' superblocks agree (md.Array.agreement
    says what that compares and why it shows the members hold the same)."""
    array = layout.array
    assert array is not None
    ok, why = array.agreement()
    names = ", ".join(f"{layout.disks[m.disk]} partition {m.partition}" for m in array.members)
    return {"step": "md-members", "title": f"the members of md array {array.name} agree ({names})",
            "status": "applied" if ok else "not applied", "details": {"why": why}}
