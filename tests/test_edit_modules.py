"""Edit 6: the modules tree of the Xen kernel."""

from __future__ import annotations

import pytest

from test_edit_shell import snapshot
from vsaimage.edits import EditContext, InstallModules
from vsaimage.edits.modules import Modules, xen_versions
from vsaimage.errors import EditError

V = "6.1.0-18-amd64"
DEP = f"/lib/modules/{V}/modules.dep"
KO = f"/lib/modules/{V}/kernel/drivers/block/xen-blkfront.ko"


def test_reads_and_lists() -> None:
    assert Modules().reads(EditContext(kernel_version=V)) == (DEP,)
    assert Modules().reads(EditContext()) == ()
    assert Modules().lists(EditContext()) == ("/lib/modules",)


def test_plan_installs_then_already_applied() -> None:
    ctx = EditContext(kernel_version=V)
    plan = Modules().plan(snapshot({}, paths={"/lib/modules/2.6.32-vsa/modules.dep"}), ctx)
    assert plan.status == "apply" and plan.changes == (InstallModules(V),)
    done = snapshot({DEP: "kernel/drivers/block/xen-blkfront.ko:\n"})
    assert Modules().plan(done, ctx).status == "already applied"
    assert Modules().check(done, ctx)


def test_empty_modules_dep_is_not_installed() -> None:
    ctx = EditContext(kernel_version=V)
    snap = snapshot({DEP: ""})
    assert not Modules().check(snap, ctx)
    assert Modules().plan(snap, ctx).status == "apply"


def test_plan_without_version_is_an_error() -> None:
    with pytest.raises(EditError, match="kernel version"):
        Modules().plan(snapshot({}), EditContext())


def test_inspect_check_from_the_listing() -> None:
    ctx = EditContext()
    old = "/lib/modules/2.6.32-vsa/modules.dep"
    assert not Modules().check(snapshot({}, paths={old, "/lib/modules/2.6.32-vsa/kernel/x.ko"}), ctx)
    assert Modules().check(snapshot({}, paths={old, DEP, KO}), ctx)
    assert Modules().check(snapshot({}, paths={DEP, KO + ".xz"}), ctx)
    assert not Modules().check(snapshot({}, paths={KO}), ctx)  # no modules.dep: incomplete
    assert xen_versions(frozenset({DEP, KO, old})) == [V]
