"""The plan: every change a convert makes, as data, built before it is made.

Host items (the disk copy, the repacked initrd, the xl config) and the guest
edits (each with the files it writes and the modules payload it installs)
form one Plan. --dry-run prints it; convert executes it and renders its
result from the executed plan (statuses and the facts execution measured),
so the dry run and the result document list the same outputs and guest paths.
The same catalogue of postconditions serves inspect and verify.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from vsaimage.edits import (
    Change,
    Edit,
    EditContext,
    GuestFile,
    InstallModules,
    MakeLink,
    Snapshot,
    Status,
    StepPlan,
    UploadFile,
    WriteFile,
    modules,
)
from vsaimage.edits.catalog import ALL as ALL_EDITS
from vsaimage.edits.catalog import NAMES
from vsaimage.errors import BadInput, GuestPathError
from vsaimage.model import expand

TITLES = {e.name: e.title for e in ALL_EDITS}


def check_skips(skip: Iterable[str]) -> frozenset[str]:
    unknown = sorted(set(skip) - set(NAMES))
    if unknown:
        raise BadInput(f"--skip {unknown[0]}: no such step", hint=f"steps: {', '.join(NAMES)}")
    return frozenset(skip)


@dataclass(frozen=True)
class HostItem:
    """A file convert writes on the host: the disk, the initrd, the xl config."""

    step: str  # "copy", "initrd", "xl"
    title: str
    output: str  # the file's final name
    status: Status = "apply"
    details: Mapping[str, object] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


_Item = TypeVar("_Item", StepPlan, HostItem)


@dataclass(frozen=True)
class Plan:
    """Host items and guest steps; `before` runs first (the disk copy), then
    the guest steps, then `after` (initrd, xl config)."""

    before: tuple[HostItem, ...]
    steps: tuple[StepPlan, ...]
    after: tuple[HostItem, ...] = ()

    @property
    def changes(self) -> list[Change]:
        return [c for s in self.steps for c in s.changes]

    @property
    def outputs(self) -> list[str]:
        return [h.output for h in (*self.before, *self.after)]

    @property
    def warnings(self) -> list[str]:
        """What every item says the user must be told, in plan order."""
        items: list[HostItem | StepPlan] = [*self.before, *self.steps, *self.after]
        return [w for item in items for w in item.warnings]

    @property
    def guest_paths(self) -> list[str]:
        """Every guest path the edits write, and each modules directory."""
        return [modules.guest_dir(c.version) if isinstance(c, InstallModules) else c.path
                for c in self.changes]

    def with_host(self, *, before: Iterable[HostItem] = (), after: Iterable[HostItem] = ()) -> Plan:
        return replace(self, before=(*self.before, *before), after=(*self.after, *after))

    def executed(self, facts: Mapping[str, Mapping[str, object]],
                 statuses: Mapping[str, Status] | None = None) -> Plan:
        """The plan as carried out: what was to apply is applied, unless
        `statuses` says otherwise; `facts` adds what execution measured to
        the details of each named item."""
        overrides = statuses or {}

        def carried_out(item: _Item) -> _Item:
            status = overrides.get(item.step, "applied" if item.status == "apply" else item.status)
            return replace(item, status=status, details={**item.details, **facts.get(item.step, {})})

        return Plan(tuple(map(carried_out, self.before)), tuple(map(carried_out, self.steps)),
                    tuple(map(carried_out, self.after)))

    def lines(self) -> list[str]:
        """One line per item and its status, then one per file it writes:
        what -v shows."""
        found = []
        for d in self.as_dicts():
            found.append(f"{d['step']}: {d['status']} ({d['title']})")
            found += [f"  {_change_line(c)}" for c in d["changes"]]  # type: ignore[attr-defined]
        return found

    def as_dicts(self) -> list[dict[str, object]]:
        return [*map(_host_dict, self.before), *map(step_dict, self.steps), *map(_host_dict, self.after)]


def details_doc(item: StepPlan | HostItem) -> dict[str, object]:
    """An item's details as the JSON has them, its warnings among them."""
    return {**item.details, **({"warnings": list(item.warnings)} if item.warnings else {})}


def _host_dict(h: HostItem) -> dict[str, object]:
    return {"step": h.step, "title": h.title, "status": h.status, "details": details_doc(h),
            "changes": [{"output": h.output}]}


def _change_line(change: Mapping[str, object]) -> str:
    if "write" in change:
        return f"write {change['write']} ({change['bytes']} bytes, mode {change['mode']})"
    if "upload" in change:
        return f"upload the {change['from']} to {change['upload']}"
    if "link" in change:
        return f"link {change['link']} -> {change['to']}"
    if "install_modules" in change:
        return f"install the modules into {change['install_modules']}"
    return f"write {change['output']}"


def step_dict(s: StepPlan) -> dict[str, object]:
    changes: list[dict[str, object]] = []
    for c in s.changes:
        if isinstance(c, WriteFile):
            changes.append({"write": c.path, "bytes": len(c.data), "mode": f"{c.mode:04o}"})
        elif isinstance(c, UploadFile):
            changes.append({"upload": c.path, "from": c.source})
        elif isinstance(c, MakeLink):
            changes.append({"link": c.path, "to": c.target})
        else:
            changes.append({"install_modules": modules.guest_dir(c.version)})
    return {"step": s.step, "title": TITLES[s.step], "status": s.status,
            "details": details_doc(s), "changes": changes}


def build(snap: Snapshot, ctx: EditContext, skip: frozenset[str]) -> Plan:
    """The guest steps (host items are added by the convert command, which knows the files)."""
    return Plan((), tuple(StepPlan(e.name, "skipped") if e.name in skip else plan_step(e, snap, ctx)
                          for e in ALL_EDITS))


def plan_step(edit: Edit, snap: Snapshot, ctx: EditContext) -> StepPlan:
    """The edit's plan, refused when a path it reads (and so every path it
    writes) leads nowhere usable: a dangling symlink, a loop, /proc ..."""
    for path in (p for pattern in edit.reads(ctx) for p in expand(pattern, snap.paths)):
        error = snap.get(path).error
        if error is not None:
            raise GuestPathError(f"{error} (step {edit.name})",
                                 hint=f"fix the link in the image, or --skip {edit.name}")
    return edit.plan(snap, ctx)


def postconditions(snap: Snapshot, ctx: EditContext, skip: frozenset[str] = frozenset()) -> dict[str, bool]:
    """Which edits are in place (skipped ones are left out)."""
    return {e.name: e.check(snap, ctx) for e in ALL_EDITS if e.name not in skip}


class GuestReader(Protocol):
    """What reading a snapshot needs: the appliance's Guest, or a host tree
    standing in for the guest root."""

    def read(self, path: str) -> GuestFile: ...

    def list(self, directory: str) -> set[str]: ...


def read_snapshot(guest: GuestReader, ctx: EditContext, *, skip: frozenset[str] = frozenset(),
                  extra: Sequence[str] = ()) -> Snapshot:
    """Read every file and listing the edits (those not skipped) need, with
    guest paths resolved as in the running VSA. The listings come first: a
    pattern among the reads (`/etc/init/*.conf`) reads the files they found
    there."""
    reads: list[str] = list(extra)
    lists: list[str] = []
    for edit in ALL_EDITS:
        if edit.name not in skip:
            reads.extend(edit.reads(ctx))
            lists.extend(edit.lists(ctx))
    paths: set[str] = set()
    for d in dict.fromkeys(lists):
        paths |= guest.list(d)
    found = (p for pattern in reads for p in expand(pattern, paths))
    return Snapshot({p: guest.read(p) for p in dict.fromkeys(found)}, frozenset(paths))
