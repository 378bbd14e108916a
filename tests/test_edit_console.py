"""Edit 7: inittab and securetty for the hvc0 console."""

from __future__ import annotations

import pytest

from test_edit_shell import snapshot
from vsaimage.edits import EditContext, WriteFile
from vsaimage.edits.console import (
    AUTOLOGIN,
    AUTOLOGIN_WARNING,
    INITTAB,
    LOGIN,
    SECURETTY,
    Console,
    patch_inittab,
    patch_securetty,
)
from vsaimage.errors import MissingFile

INITTAB_TEXT = """# /etc/inittab
id:3:initdefault:
si::sysinit:/etc/rc.d/rc.sysinit
l3:3:wait:/etc/rc.d/rc 3
ca::ctrlaltdel:/sbin/shutdown -t3 -r now
# Run gettys in standard runlevels
1:2345:respawn:/sbin/mingetty tty1
2:2345:respawn:/sbin/mingetty tty2
3:2345:respawn:/sbin/mingetty tty3
4:2345:respawn:/sbin/mingetty tty4
5:2345:respawn:/sbin/mingetty tty5
6:2345:respawn:/sbin/mingetty tty6
#7:2345:respawn:/sbin/mingetty tty7
s0:2345:respawn:/sbin/agetty -L 9600 ttyS0 vt100
10:2345:respawn:/sbin/lhn_console
x:5:respawn:/etc/X11/prefdm -nodaemon
"""


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_inittab(crlf: bool) -> None:
    text = INITTAB_TEXT.replace("\n", "\r\n") if crlf else INITTAB_TEXT
    out = patch_inittab(text)
    old_lines, new_lines = text.splitlines(keepends=True), out.splitlines(keepends=True)
    assert new_lines[-1] == LOGIN + ("\r\n" if crlf else "\n")
    for old, new in zip(old_lines, new_lines[:-1], strict=True):
        ident = old.split(":", 1)[0]
        assert new == ("#" + old if ident in {"1", "2", "3", "4", "5", "6", "s0"} else old)
    assert patch_inittab(out) == out


def test_autologin_replaces_the_login_line() -> None:
    out = patch_inittab(INITTAB_TEXT)
    auto = patch_inittab(out, autologin=True)
    assert AUTOLOGIN in auto and LOGIN not in auto
    assert patch_inittab(auto, autologin=True) == auto
    assert patch_inittab(auto) == out


def test_no_final_newline_and_duplicate_ids() -> None:
    assert patch_inittab("id:3:initdefault:") == "id:3:initdefault:\n" + LOGIN + "\n"
    assert patch_inittab("hvc:1:once:/x\nhvc:2:once:/y\n") == LOGIN + "\n"


def test_securetty() -> None:
    assert patch_securetty("console\ntty1\n") == "console\ntty1\nhvc0\n"
    assert patch_securetty("console\ntty1") == "console\ntty1\nhvc0\n"
    assert patch_securetty("hvc0\n") == "hvc0\n"


def test_plan_details_check_and_missing() -> None:
    edit = Console()
    ctx = EditContext(console_autologin=True)
    snap = snapshot(
        {
            INITTAB: INITTAB_TEXT + "7:2345:respawn:/sbin/agetty -l /bin/su hvc0 38400 linux\n",
            SECURETTY: "console\n",
        }
    )
    plan = edit.plan(snap, ctx)
    assert plan.warnings == (AUTOLOGIN_WARNING,) and "root shell" in AUTOLOGIN_WARNING
    assert plan.details["other_hvc0_lines"] == ["7:2345:respawn:/sbin/agetty -l /bin/su hvc0 38400 linux"]
    writes = {c.path: c.data for c in plan.changes if isinstance(c, WriteFile)}
    assert set(writes) == {INITTAB, SECURETTY}
    assert not edit.check(snap, ctx)
    done = snapshot(writes)
    assert edit.plan(done, ctx).status == "already applied"
    assert edit.check(done, ctx) and edit.check(done, EditContext())  # verify knows no option
    no_securetty = snapshot({INITTAB: writes[INITTAB]})
    assert edit.plan(no_securetty, ctx).status == "already applied"
    with pytest.raises(MissingFile, match=INITTAB) as err:
        edit.plan(snapshot({SECURETTY: "console\n"}), ctx)
    assert "--skip console" in (err.value.hint or "")


# --- what tty1 ran goes to hvc0 ---------------------------------------------

MOVED = {
    "getty-with-the-vsa-login-program": (
        "1:2345:respawn:/sbin/mingetty --loginprog=/sbin/lhn_login tty1",
        "hvc:2345:respawn:/sbin/mingetty --loginprog=/sbin/lhn_login hvc0",
    ),
    "agetty-l": (
        "1:2345:respawn:/sbin/agetty -n -l /sbin/lhn_login tty1 38400 linux",
        "hvc:2345:respawn:/sbin/agetty -n -l /sbin/lhn_login hvc0 38400 linux",
    ),
    "autologin-getty": (
        "1:345:respawn:/sbin/mingetty --autologin admin tty1",
        "hvc:345:respawn:/sbin/mingetty --autologin admin hvc0",
    ),
    "the-program-itself-on-dev-tty1": (
        "1:2345:respawn:/etc/lefthand/bin/console  -t /dev/tty1  --menu",
        "hvc:2345:respawn:/etc/lefthand/bin/console  -t /dev/hvc0  --menu",
    ),
    "the-program-without-a-tty": (
        "1:2345:respawn:/sbin/lhn_login -- start",
        "hvc:2345:respawn:/sbin/lhn_login -- start",
    ),
}


@pytest.mark.parametrize("shape", sorted(MOVED))
def test_tty1_program_moves_to_hvc0_with_only_the_device_changed(shape: str) -> None:
    tty1, hvc0 = MOVED[shape]
    text = INITTAB_TEXT.replace("1:2345:respawn:/sbin/mingetty tty1", tty1)
    out = patch_inittab(text)
    assert out.splitlines()[-1] == hvc0 and LOGIN not in out
    assert "#" + tty1 in out.splitlines()
    assert patch_inittab(out) == out
    snap = snapshot({INITTAB: out, SECURETTY: "console\nhvc0\n"})
    assert Console().check(snap, EditContext())
    plan = Console().plan(snapshot({INITTAB: text}), EditContext())
    assert plan.details["tty1"] == tty1 and plan.details["hvc0"] == hvc0
    assert "own console program" in str(plan.details["why"])


@pytest.mark.parametrize(
    "tty1",
    [
        "1:2345:respawn:/sbin/mingetty tty1",
        "1:2345:respawn:/sbin/mingetty --noclear tty1",
        "1:2345:respawn:/sbin/agetty 38400 tty1 linux",
        "1:2345:respawn:/sbin/getty 38400 tty1",
        "c1:12345:respawn:/sbin/agetty 38400 tty1 linux",  # Debian's id, found by the device
    ],
)
def test_plain_getty_gets_the_agetty_login(tty1: str) -> None:
    out = patch_inittab(INITTAB_TEXT.replace("1:2345:respawn:/sbin/mingetty tty1", tty1))
    assert out.splitlines()[-1] == LOGIN
    plan = Console().plan(snapshot({INITTAB: INITTAB_TEXT}), EditContext())
    assert plan.details["why"] == "tty1 ran a plain getty: a login prompt on hvc0"


def test_autologin_stays_opt_in_over_the_vsa_program() -> None:
    tty1, hvc0 = MOVED["agetty-l"]
    text = INITTAB_TEXT.replace("1:2345:respawn:/sbin/mingetty tty1", tty1)
    auto = patch_inittab(text, autologin=True)
    assert auto.splitlines()[-1] == AUTOLOGIN
    # converted again without the option: back to the VSA's program
    assert patch_inittab(auto).splitlines()[-1] == hvc0


def test_no_tty1_entry_gets_the_agetty_login() -> None:
    text = "id:3:initdefault:\n2:2345:respawn:/sbin/mingetty tty2\n"
    assert patch_inittab(text) == "id:3:initdefault:\n#2:2345:respawn:/sbin/mingetty tty2\n" + LOGIN + "\n"
    assert Console().plan(snapshot({INITTAB: text}), EditContext()).details["tty1"] is None


def test_an_admins_commented_tty1_line_is_not_taken() -> None:
    tty1, hvc0 = MOVED["getty-with-the-vsa-login-program"]
    text = "#1:2345:respawn:/sbin/mingetty tty1\n" + tty1 + "\n"
    out = patch_inittab(text)
    assert out == "#1:2345:respawn:/sbin/mingetty tty1\n#" + tty1 + "\n" + hvc0 + "\n"
    assert patch_inittab(out) == out


def test_rerun_finds_its_own_commented_tty1_line_among_an_admins() -> None:
    tty1, hvc0 = MOVED["agetty-l"]
    out = patch_inittab(tty1 + "\n#1:2345:respawn:/sbin/mingetty tty1\n")
    assert out.splitlines()[-1] == hvc0 and patch_inittab(out) == out
