"""Facts + options → the list of steps (pure data). Printed by --dry-run,
applied by convert.py, and the same catalogue of postconditions serves
inspect and verify."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vsaimage.edits import Edit, EditContext, InstallModules, Snapshot, StepPlan, WriteFile
from vsaimage.edits.catalog import ALL as ALL_EDITS
from vsaimage.errors import BadInput
from vsaimage.guestpath import GuestPathError

STEP_NAMES = tuple(e.name for e in ALL_EDITS)
TITLES = {e.name: e.title for e in ALL_EDITS}


def check_skips(skip: Iterable[str]) -> frozenset[str]:
    unknown = sorted(set(skip) - set(STEP_NAMES))
    if unknown:
        raise BadInput(f"--skip {unknown[0]}: no such step", hint=f"steps: {', '.join(STEP_NAMES)}")
    return frozenset(skip)


@dataclass(frozen=True)
class Plan:
    steps: tuple[StepPlan, ...]

    @property
    def changes(self) -> list[WriteFile | InstallModules]:
        return [c for s in self.steps for c in s.changes]

    def as_dicts(self) -> list[dict[str, object]]:
        return [step_dict(s) for s in self.steps]


def step_dict(s: StepPlan) -> dict[str, object]:
    changes: list[dict[str, object]] = []
    for c in s.changes:
        if isinstance(c, WriteFile):
            changes.append({"write": c.path, "bytes": len(c.data), "mode": f"{c.mode:04o}"})
        else:
            changes.append({"install_modules": f"/lib/modules/{c.version}"})
    return {"step": s.step, "title": TITLES[s.step], "status": s.status,
            "details": dict(s.details), "changes": changes}


def build(snap: Snapshot, ctx: EditContext, skip: frozenset[str]) -> Plan:
    return Plan(tuple(StepPlan(e.name, "skipped") if e.name in skip else _plan(e, snap, ctx)
                      for e in ALL_EDITS))


def _plan(edit: Edit, snap: Snapshot, ctx: EditContext) -> StepPlan:
    """The edit's plan, refused when a path it reads (and so every path it
    writes) leads nowhere usable: a dangling symlink, a loop, /proc ..."""
    for path in edit.reads(ctx):
        error = snap.get(path).error
        if error is not None:
            raise GuestPathError(f"{error} (step {edit.name})",
                                 hint=f"fix the link in the image, or --skip {edit.name}")
    return edit.plan(snap, ctx)


def postconditions(snap: Snapshot, ctx: EditContext, skip: frozenset[str] = frozenset()) -> dict[str, bool]:
    """Which edits are in place (skipped ones are left out)."""
    return {e.name: e.check(snap, ctx) for e in ALL_EDITS if e.name not in skip}
