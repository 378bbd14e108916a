"""The console edit under upstart (LeftHand OS 12's RHEL 6 jobs) and
systemd: the program tty1 runs goes on hvc0 through files that init reads,
and an inittab line, which upstart ignores, is never what is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.build_image import FIXTURES
from test_edit_shell import snapshot
from vsaimage.edits import EditContext, MakeLink, WriteFile, systemd, upstart
from vsaimage.edits.console import Console
from vsaimage.errors import EditError

LHOS12 = FIXTURES / "lhos12-root"
UPSTART_FILES = {
    f"/{p.relative_to(LHOS12)}": p.read_bytes()
    for p in [*sorted((LHOS12 / "etc/init").glob("*.conf")), LHOS12 / "etc/sysconfig/init",
              LHOS12 / "etc/inittab", LHOS12 / "sbin/init", LHOS12 / "lib/udev/rules.d/10-console.rules"]
}
CTX = EditContext()


def applied(files: dict[str, bytes], ctx: EditContext = CTX) -> dict[str, bytes]:
    plan = Console().plan(snapshot(files), ctx)
    out = dict(files)
    for c in plan.changes:
        assert isinstance(c, WriteFile), c
        out[c.path] = c.data
    return out


def test_upstart_job_runs_tty1_program_on_hvc0() -> None:
    plan = Console().plan(snapshot(UPSTART_FILES), CTX)
    assert plan.status == "apply"
    written = {c.path: c.data.decode() for c in plan.changes if isinstance(c, WriteFile)}
    assert set(written) == {upstart.JOB, upstart.SYSCONFIG, upstart.ETC_RULES}
    job = written[upstart.JOB]
    assert "exec /sbin/mingetty --loginprog=/sbin/lhn_login /dev/hvc0\n" in job
    assert "start on stopped rc RUNLEVEL=[2345]\n" in job and "respawn\n" in job
    # the inittab, which upstart reads only for the runlevel, is untouched
    assert "/etc/inittab" not in written
    sysconfig = written[upstart.SYSCONFIG]
    assert "\nACTIVE_CONSOLES=  # vsaimage:" in sysconfig and sysconfig.endswith("SINGLE=/sbin/sushell\n")
    assert "was: ACTIVE_CONSOLES=/dev/tty[1-6]" in sysconfig
    # everything else of /etc/sysconfig/init byte for byte
    old = UPSTART_FILES[upstart.SYSCONFIG].decode().splitlines()
    new = sysconfig.splitlines()
    assert [a for a, b in zip(old, new, strict=True) if a != b] == ["ACTIVE_CONSOLES=/dev/tty[1-6]"]
    rules = written[upstart.ETC_RULES]
    assert '#KERNEL=="hvc*",' in rules and 'KERNEL=="console",' in rules
    assert plan.details["init"]["name"] == "upstart"  # type: ignore[index]


def test_upstart_idempotent_and_checked() -> None:
    once = applied(UPSTART_FILES)
    assert applied(once) == once
    assert Console().plan(snapshot(once), CTX).status == "already applied"
    assert Console().check(snapshot(once), CTX)
    assert not Console().check(snapshot(UPSTART_FILES), CTX)


def test_upstart_job_of_its_own_naming_tty1() -> None:
    """A VSA job running its program on tty1 itself: the job goes to hvc0
    with tty1 changed, and its `start on` is commented out (reversibly)."""
    own = ("start on stopped rc RUNLEVEL=[2345]\nstop on runlevel [S016]\nrespawn\n"
           "exec /sbin/lhn_console /dev/tty1\n")
    files = {**UPSTART_FILES, "/etc/init/lhn-console.conf": own.encode()}
    out = applied(files)
    assert b"exec /sbin/lhn_console /dev/hvc0\n" in out[upstart.JOB]
    disabled = out["/etc/init/lhn-console.conf"].decode()
    assert "#start on stopped rc" in disabled
    assert upstart.restored(disabled) == own


def test_upstart_nothing_on_tty1_names_what_was_read() -> None:
    files = {**UPSTART_FILES, upstart.SYSCONFIG: b"ACTIVE_CONSOLES=/dev/tty2\n"}
    said = r"ACTIVE_CONSOLES=/dev/tty2 \(/etc/sysconfig/init\), which has no tty1"
    with pytest.raises(EditError, match=said):
        Console().plan(snapshot(files), CTX)


def test_upstart_autologin() -> None:
    plan = Console().plan(snapshot(UPSTART_FILES), EditContext(console_autologin=True))
    job = next(c for c in plan.changes if isinstance(c, WriteFile) and c.path == upstart.JOB)
    assert b"exec /sbin/agetty -l /bin/su hvc0 38400 linux\n" in job.data


SYSTEMD_FILES = {
    "/sbin/init": b"\x7fELF systemd 219",
    "/lib/systemd/system/getty@.service":
        b"[Service]\nExecStart=-/sbin/agetty --noclear -l /sbin/lhn_login %I $TERM\n",
    "/lib/systemd/system/serial-getty@.service": b"[Service]\nExecStart=-/sbin/agetty %I 115200\n",
}


def test_systemd_dropin_and_link() -> None:
    plan = Console().plan(snapshot(SYSTEMD_FILES), CTX)
    written = {c.path: c for c in plan.changes}
    dropin = written[systemd.DROPIN]
    assert isinstance(dropin, WriteFile)
    assert dropin.data.decode().endswith("ExecStart=\nExecStart=-/sbin/agetty --noclear -l /sbin/lhn_login "
                                         "hvc0 $TERM\n")
    assert written[systemd.WANTS] == MakeLink(systemd.WANTS, "/lib/systemd/system/serial-getty@.service")
    assert "/etc/inittab" not in written


def test_systemd_without_getty_unit_is_refused() -> None:
    with pytest.raises(EditError, match="systemd: no ExecStart for getty@tty1"):
        Console().plan(snapshot({"/sbin/init": b"\x7fELF systemd 219"}), CTX)


def test_unknown_init_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EditError, match="cannot tell the init system"):
        Console().plan(snapshot({"/etc/inittab": b"id:3:initdefault:\n"}), CTX)
