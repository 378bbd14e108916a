"""Edit `console`: the VSA's console on the Xen console.

A PV domU has no tty1..tty6 and no serial port, so init would respawn those
gettys in vain while the only console, hvc0, stays silent. What to change
depends on the init system, found from the guest's content (vsa/initsys.py):
a change the guest's init does not read would be reported applied and do
nothing.

Under sysvinit (this module) we comment out the `1:`..`6:` and `s0:`
entries of /etc/inittab (every other line is kept byte for byte) and put on
hvc0 what tty1 ran: on the VSA that is its configuration interface (a getty
whose login program is /sbin/lhn_login, or the program itself), which the
appliance's users know and which needs no root password. Only the device
changes. When tty1 ran a plain getty (the system's own /bin/login), hvc0
gets an agetty instead. Under upstart (upstart.py) and systemd (systemd.py)
the same program goes on hvc0 through their own files. Root may log in on
hvc0 through /etc/securetty in every case.
"""

from __future__ import annotations

import posixpath
import re

from vsaimage.edits import Change, EditContext, Snapshot, StepPlan, decide, systemd, text_write, upstart
from vsaimage.edits.textfile import ensure_final_newline, newline_of, require_text, split_lines
from vsaimage.errors import EditError
from vsaimage.vsa import initsys

INITTAB = "/etc/inittab"
SECURETTY = "/etc/securetty"
DISABLED_IDS = frozenset({"1", "2", "3", "4", "5", "6", "s0"})
HVC_ID = "hvc"  # inittab ids are at most 4 characters
LOGIN_COMMAND = "/sbin/agetty hvc0 38400 linux"
# The seed's variant: su as the login program means a root shell, no password.
AUTOLOGIN_COMMAND = "/sbin/agetty -l /bin/su hvc0 38400 linux"
LOGIN = f"{HVC_ID}:2345:respawn:{LOGIN_COMMAND}"
AUTOLOGIN = f"{HVC_ID}:2345:respawn:{AUTOLOGIN_COMMAND}"
AUTOLOGIN_WARNING = (
    "--console-autologin: anyone with access to the domain's console "
    "(xl console) gets a root shell without a password"
)
GETTYS = frozenset({"mingetty", "agetty", "getty", "mgetty", "fgetty", "ngetty"})
# Options that make a getty run something else than /bin/login, or log a user
# in by itself: a getty given one of them is the VSA's program, not a plain getty.
_OWN_LOGIN = ("-l", "--login-program", "--loginprog", "-a", "--autologin")
# tty1 as a word of a command line, with or without /dev/ (kept when moved)
_TTY1 = re.compile(r"(?<!\S)(/dev/|)tty1(?!\S)")


def _split(line: str) -> tuple[str, str]:
    """(content, line ending) of one line."""
    body = line.rstrip("\r\n")
    return body, line[len(body) :]


def _ident(body: str) -> str | None:
    return body.split(":", 1)[0] if ":" in body else None


def _runs_tty1(body: str) -> bool:
    fields = body.split(":", 3)
    if len(fields) != 4 or fields[0].lstrip().startswith("#"):
        return False
    return fields[0] == "1" or _TTY1.search(fields[3]) is not None


def tty1_entry(text: str) -> str | None:
    """The inittab entry that runs on tty1: the active one, else (on a
    converted file) one this edit commented out with a bare `#`: the one
    whose hvc0 line is there, or the last."""
    lines = [_split(line)[0] for line in split_lines(text)]
    active = [b for b in lines if _runs_tty1(b)]
    if active:
        return active[0]
    ours = [b[1:] for b in lines if b.startswith("#") and _ident(b[1:]) in DISABLED_IDS and _runs_tty1(b[1:])]
    hvc = [b for b in lines if _ident(b) == HVC_ID]
    return next((e for e in ours if hvc_line(e)[0] in hvc), ours[-1] if ours else None)


def is_plain_getty(entry: str) -> bool:
    """Whether an inittab entry runs a getty with the system's /bin/login."""
    return is_plain_command(entry.split(":", 3)[3])


def is_plain_command(command: str) -> bool:
    """Whether a command line runs a getty with the system's /bin/login."""
    words = command.split()
    if not words or posixpath.basename(words[0]) not in GETTYS:
        return False
    return not any(w.split("=", 1)[0] in _OWN_LOGIN for w in words[1:])


def program_on_hvc0(command: str | None, autologin: bool = False) -> tuple[str | None, str]:
    """(what tty1 runs moved to hvc0, or None for a login prompt there;
    why). `command` names tty1 as tty1 or /dev/tty1 (None: nothing runs
    there); only that word changes."""
    if autologin:
        return None, "--console-autologin: a root shell on hvc0"
    if command is None:
        return None, "no entry runs on tty1: a login prompt on hvc0"
    if is_plain_command(command):
        return None, "tty1 ran a plain getty: a login prompt on hvc0"
    moved = _TTY1.sub(lambda m: m.group(1) + "hvc0", command)
    return moved, "tty1 ran the VSA's own console program: moved to hvc0"


def login_command(autologin: bool) -> str:
    return AUTOLOGIN_COMMAND if autologin else LOGIN_COMMAND


def hvc_line(entry: str | None, autologin: bool = False) -> tuple[str, str]:
    """(the hvc0 entry, why) for what tty1 ran."""
    moved, why = program_on_hvc0(None if entry is None else entry.split(":", 3)[3], autologin)
    if entry is None or moved is None:
        return f"{HVC_ID}:2345:respawn:{login_command(autologin)}", why
    _, levels, action, _ = entry.split(":", 3)
    return f"{HVC_ID}:{levels}:{action}:{moved}", why


def patch_inittab(text: str, autologin: bool = False) -> str:
    """inittab with the VGA and serial gettys commented out and one hvc0
    entry for what tty1 ran; an hvc line of ours is brought up to date."""
    wanted, _why = hvc_line(tty1_entry(text), autologin)
    out: list[str] = []
    have = False
    for line in split_lines(text):
        body, ending = _split(line)
        ident = _ident(body)
        if ident in DISABLED_IDS:
            line = "#" + line
        elif ident == HVC_ID:
            if have:
                continue  # init refuses duplicate ids: keep only one
            have = True
            line = wanted + ending
        out.append(line)
    result = "".join(out)
    if not have:
        result = ensure_final_newline(result) + wanted + newline_of(text)
    return result


def patch_securetty(text: str) -> str:
    """securetty allowing root on hvc0."""
    if "hvc0" in (line.strip() for line in split_lines(text)):
        return text
    return ensure_final_newline(text) + "hvc0" + newline_of(text)


def other_hvc0_gettys(text: str) -> list[str]:
    """Active lines that are not ours but also run something on hvc0 (e.g. a
    hand-made seed hack): two gettys on one console fight over it."""
    lines = (line.rstrip("\r\n") for line in split_lines(text))
    return [
        line
        for line in lines
        if not line.startswith("#") and line.split(":", 1)[0] != HVC_ID and "hvc0" in line
    ]


class Console:
    name = "console"
    title = "tty1's program on the Xen console hvc0 (inittab, upstart job or systemd unit; securetty)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return (*initsys.READS, SECURETTY, *upstart.READS, *systemd.READS)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return initsys.LISTS

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        init = initsys.detect(snap)
        plan = {"sysvinit": _sysvinit, "upstart": _upstart, "systemd": _systemd}.get(init.name)
        if plan is None:
            require_text(snap, INITTAB, self.name)  # no inittab either: name the file SAN/iQ has
            raise EditError(f"{initsys.SBIN_INIT}: cannot tell the init system, so not where tty1's "
                            f"program is started ({'; '.join(init.evidence)})",
                            hint="--skip console converts without this edit")
        changes, details = plan(snap, ctx.console_autologin)
        securetty = snap.text(SECURETTY)
        if securetty is not None:
            changes += text_write(snap, SECURETTY, patch_securetty(securetty))
        details = {"init": init.as_dict(), **details, "autologin": ctx.console_autologin}
        warnings = (AUTOLOGIN_WARNING,) if ctx.console_autologin else ()
        return decide(self.name, changes, details, warnings=warnings)

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        """In place when planning finds nothing to change, in either login
        mode (verify does not know the option): no VGA or serial getty
        started, hvc0 running what tty1 ran, root allowed there."""
        for autologin in (False, True):
            try:
                if not self.plan(snap, EditContext(console_autologin=autologin)).changes:
                    return True
            except EditError:
                return False
        return False


_Planned = tuple[list[Change], dict[str, object]]


def _sysvinit(snap: Snapshot, autologin: bool) -> _Planned:
    text = require_text(snap, INITTAB, Console.name)
    changes: list[Change] = text_write(snap, INITTAB, patch_inittab(text, autologin))
    tty1 = tty1_entry(text)
    hvc0, why = hvc_line(tty1, autologin)
    details: dict[str, object] = {"file": INITTAB, "tty1": tty1, "hvc0": hvc0, "why": why}
    others = other_hvc0_gettys(text)
    if others:
        details["other_hvc0_lines"] = others
    return changes, details


def _upstart(snap: Snapshot, autologin: bool) -> _Planned:
    jobs = upstart.jobs(snap)
    tty1 = upstart.find_tty1(jobs, snap.text(upstart.SYSCONFIG))
    moved, why = program_on_hvc0(tty1.command, autologin)
    key, process = (tty1.main.key, moved) if moved is not None else ("exec", login_command(autologin))
    changes: list[Change] = text_write(snap, upstart.JOB, upstart.job_text(tty1, key, process, why))
    quieted, gettys = upstart.quiet_consoles(tty1, jobs, snap)
    serial, serial_said = upstart.serial_rules(snap, jobs)
    details: dict[str, object] = {"file": upstart.JOB, "tty1": tty1.describe(), "hvc0": f"{key} {process}",
                                  "why": why, "gettys": gettys}
    if serial_said:
        details["serial"] = serial_said
    others = upstart.other_hvc0_jobs(jobs)
    if others:
        details["other_hvc0_jobs"] = others
    return [*changes, *quieted, *serial], details


def _systemd(snap: Snapshot, autologin: bool) -> _Planned:
    exec_start, sources = systemd.tty1_exec_start(snap)
    moved, why = program_on_hvc0(systemd.command_of(exec_start), autologin)
    prefix = systemd.prefix_of(exec_start) if moved is not None else "-"
    command = moved if moved is not None else login_command(autologin)
    changes = systemd.changes(snap, prefix, command, why)
    return changes, {"file": systemd.DROPIN, "tty1": f"ExecStart={exec_start} ({', '.join(sources)})",
                     "hvc0": f"ExecStart={prefix}{command}", "why": why, "enabled_by": systemd.WANTS}
