"""Edit 7, `console`: a login prompt on the Xen console.

A PV domU has no tty1..tty6 and no serial port, so init would respawn those
gettys in vain while the only console, hvc0, stays silent. We comment out
the `1:`..`6:` and `s0:` entries (every other line is kept byte for byte),
add a getty on hvc0, and let root log in there through /etc/securetty.
"""

from __future__ import annotations

from vsaimage.edits import Change, EditContext, Snapshot, StepPlan, decide, text_write
from vsaimage.edits.textfile import ensure_final_newline, newline_of, require_text, split_lines

INITTAB = "/etc/inittab"
SECURETTY = "/etc/securetty"
DISABLED_IDS = frozenset({"1", "2", "3", "4", "5", "6", "s0"})
HVC_ID = "hvc"  # inittab ids are at most 4 characters
LOGIN = "hvc:2345:respawn:/sbin/agetty hvc0 38400 linux"
# The seed's variant: su as the login program means a root shell, no password.
AUTOLOGIN = "hvc:2345:respawn:/sbin/agetty -l /bin/su hvc0 38400 linux"
AUTOLOGIN_WARNING = (
    "--console-autologin: anyone with access to the domain's console "
    "(xl console) gets a root shell without a password"
)


def _split(line: str) -> tuple[str, str]:
    """(content, line ending) of one line."""
    body = line.rstrip("\r\n")
    return body, line[len(body) :]


def patch_inittab(text: str, autologin: bool = False) -> str:
    """inittab with the VGA and serial gettys commented out and one hvc0
    getty; an hvc line of ours with the other login mode is replaced."""
    wanted = AUTOLOGIN if autologin else LOGIN
    out: list[str] = []
    have = False
    for line in split_lines(text):
        body, ending = _split(line)
        ident = body.split(":", 1)[0] if ":" in body else None
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
    title = "Login prompt on the Xen console hvc0 (inittab, securetty)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return (INITTAB, SECURETTY)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return ()

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        text = require_text(snap, INITTAB, self.name)
        changes: list[Change] = text_write(snap, INITTAB, patch_inittab(text, ctx.console_autologin))
        securetty = snap.text(SECURETTY)
        if securetty is not None:
            changes += text_write(snap, SECURETTY, patch_securetty(securetty))
        details: dict[str, object] = {"file": INITTAB, "autologin": ctx.console_autologin}
        if ctx.console_autologin:
            details["warning"] = AUTOLOGIN_WARNING
        others = other_hvc0_gettys(text)
        if others:
            details["other_hvc0_lines"] = others
        return decide(self.name, changes, details)

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        """In place when no VGA/serial getty is active and an hvc0 getty of
        ours is, in either login mode (verify does not know the option)."""
        text = snap.text(INITTAB)
        if text is None:
            return False
        ours = False
        for line in (raw.rstrip("\r\n") for raw in split_lines(text)):
            ident = line.split(":", 1)[0] if ":" in line else None
            if ident in DISABLED_IDS:
                return False
            ours = ours or line in (LOGIN, AUTOLOGIN)
        securetty = snap.text(SECURETTY)
        return ours and (securetty is None or patch_securetty(securetty) == securetty)
