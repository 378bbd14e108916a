"""The plan as data: host items around the guest steps, what a dry run lists
and what the executed plan reports, and the table drawn from it."""

from __future__ import annotations

import io

from vsaimage.cli.render import Screen, show_convert
from vsaimage.edits import InstallModules, StepPlan, WriteFile
from vsaimage.plan import HostItem, Plan

PLAN = Plan(
    (HostItem("copy", "The converted disk", "/out/x.img"),),
    (StepPlan("console", "apply", (WriteFile("/etc/inittab", b"x", 0o644),)),
     StepPlan("modules", "apply", (InstallModules("6.1.0-1-amd64"),), {"minimal": True}),
     StepPlan("udev", "already applied")),
    (HostItem("initrd", "pcihack in the initrd", "/out/x.initrd"),
     HostItem("xl", "xl config", "/out/x.cfg")),
)


def test_outputs_and_guest_paths() -> None:
    assert PLAN.outputs == ["/out/x.img", "/out/x.initrd", "/out/x.cfg"]
    assert PLAN.guest_paths == ["/etc/inittab", "/lib/modules/6.1.0-1-amd64"]
    assert [d["step"] for d in PLAN.as_dicts()] == ["copy", "console", "modules", "udev", "initrd", "xl"]


def test_executed_plan_keeps_items_and_adds_facts() -> None:
    done = PLAN.executed({"modules": {"files": 3}}, {"initrd": "already applied"})
    statuses = {d["step"]: d["status"] for d in done.as_dicts()}
    assert statuses == {"copy": "applied", "console": "applied", "modules": "applied",
                        "udev": "already applied", "initrd": "already applied", "xl": "applied"}
    modules = next(s for s in done.steps if s.step == "modules")
    assert modules.details == {"minimal": True, "files": 3}
    assert (done.outputs, done.guest_paths) == (PLAN.outputs, PLAN.guest_paths)


def test_dry_run_table_shows_what_each_item_writes() -> None:
    out = io.StringIO()
    doc = {"dry_run": True, "steps": PLAN.as_dicts()}
    show_convert(Screen(out), doc)
    text = out.getvalue()
    for written in ("/out/x.img", "/etc/inittab", "/lib/modules/6.1.0-1-amd64/", "/out/x.cfg"):
        assert written in text, written


def test_result_table_says_what_the_initrd_lacked_and_got() -> None:
    drivers = {"needed": ["xen_blkfront", "ext4|ext3"], "missing": ["xen_blkfront", "ext4"],
               "added": ["xen_blkfront", "ext4"], "files": ["a.ko", "b.ko", "c.ko"], "unavailable": [],
               "source": "/lib/modules/6.1.0-1-amd64", "why": "neither in the initrd nor built in"}
    done = PLAN.executed({"initrd": {"drivers": drivers}})
    doc = {"steps": done.as_dicts(), "root_partition": 5, "root_device": "/dev/xvda5", "timings": {},
           "motherboard_uuid": "u", "motherboard_uuid_fallback": "f", "glibc": None,
           "outputs": {"image": "/out/x.img", "format": "raw", "initrd": "/out/x.initrd",
                       "cfg": "/out/x.cfg", "system_disks": ["/out/x.img"]},
           "kernel": {"path": "/boot/vmlinuz", "version": "6.1.0-1-amd64"},
           "xl": {"name": "x", "uuid": "u", "mac": "m", "boot": "direct", "type": "pv"}}
    out = io.StringIO()
    show_convert(Screen(out), doc)
    text = out.getvalue()
    assert "drivers: added xen_blkfront," in text  # in the steps table (wrapped)
    assert "initrd drivers    neither in the initrd nor built in\n" in text


def test_notes_have_lines_of_their_own_under_the_table() -> None:
    """A note (an edit applied, but a statement it could not judge may undo
    it) is shown whole, naming its step, in a dry run and in the result."""
    note = ("/etc/lefthand/brand/brand.init:28 `rm -f $LHN_RUN/platform.xml` may replace the link to the "
            "VMware description; could not resolve `$LHN_RUN`")
    write = WriteFile("/etc/lefthand/brand/brand.init", b"x", 0o755)
    plan = Plan((), (StepPlan("platform", "apply", (write,), {"notes": [note]}),), ())
    out = io.StringIO()
    show_convert(Screen(out), {"dry_run": True, "steps": plan.as_dicts()})
    assert f"note  platform: {note}\n" in out.getvalue()
    assert "notes:" not in out.getvalue()  # not in the table's details column
