"""Edit 1, `mobo-uuid`: give didMotherboardChange a motherboard UUID on Xen.

lhn_functions reads the UUID with dmidecode, which finds no DMI table on a PV
domU and prints nothing; the VSA then believes it moved to new hardware on
every boot. Right after each dmidecode assignment we insert a fallback that
only runs when the value is empty: the domain UUID from /sys/hypervisor/uuid,
else a UUID derived from eth0's MAC (the xl config pins both, so the value is
the same on every boot), else a constant.
"""

from __future__ import annotations

import re

from vsaimage.edits import EditContext, Snapshot, StepPlan, decide, text_write
from vsaimage.edits.shell import find_function, statement_end
from vsaimage.edits.textfile import indent_of, indent_unit, is_fixed_point, newline_at, require_text
from vsaimage.errors import EditError

PATH = "/etc/init.d/lhn_functions"
FUNCTION = "didMotherboardChange"
# First three groups generated once with uuidgen (by the seed's author); the
# last group is the MAC, so a cloned VM with a new MAC is a "new motherboard".
UUID_PREFIX = "160d007e-0f9e-11e1-b59f-"
NO_MAC = "deadb33fc0de"
BEGIN = "# vsaimage: Xen fallback for moboUUID"
END = "# vsaimage: end of Xen fallback for moboUUID"

_ASSIGN = re.compile(r"moboUUID=[\"']?(?:`|\$\()[^\n]*dmidecode")
_HEX12 = re.compile(r"[0-9a-f]{12}")

# POSIX sh for busybox and 2.6-era tools: backticks, no `local`, no bashisms.
# Every command that may fail sits in an `if`, `||` or a substitution ending
# in `:`, so a caller running under `set -e` is not aborted.
_BODY = (
    BEGIN,
    'if [ -z "$moboUUID" ]; then',
    "\tmoboUUID=`cat /sys/hypervisor/uuid 2>/dev/null || :`",
    "\t# dom0 reads all zeros there: not an identity",
    '\tcase "$moboUUID" in 00000000-0000-0000-0000-000000000000) moboUUID= ;; esac',
    "fi",
    'if [ -z "$moboUUID" ]; then',
    "\tvsa_mac=`cat /sys/class/net/eth0/address 2>/dev/null || :`",
    '\tif [ -z "$vsa_mac" ]; then',
    "\t\tvsa_mac=`(ifconfig eth0 || /sbin/ifconfig eth0) 2>/dev/null | sed -n"
    " -e 's/.*HWaddr  *\\([0-9A-Fa-f:]*\\).*/\\1/p'"
    " -e 's/.* ether  *\\([0-9A-Fa-f:]*\\).*/\\1/p' | sed -n 1p`",
    "\tfi",
    "\tvsa_mac=`echo \"$vsa_mac\" | tr -d ':' | tr 'ABCDEF' 'abcdef'`",
    '\tcase "$vsa_mac" in',
    "\t" + "[0-9a-f]" * 12 + ") ;;",
    f"\t*) vsa_mac={NO_MAC} ;;",
    "\tesac",
    f'\tmoboUUID="{UUID_PREFIX}$vsa_mac"',
    "\tunset vsa_mac",
    "fi",
    END,
)


def fallback_uuid(mac: str) -> str:
    """The UUID the patched guest computes from eth0's MAC (any case, with or
    without colons) when /sys/hypervisor/uuid gives nothing."""
    digits = mac.replace(":", "").lower()
    return UUID_PREFIX + (digits if _HEX12.fullmatch(digits) else NO_MAC)


def fallback_block(indent: str, newline: str) -> str:
    """The inserted lines, indented like the assignment they follow."""
    unit = indent_unit(indent)
    lines = [indent + line.replace("\t", unit) for line in _BODY]
    return newline.join(lines) + newline


def patch(text: str) -> str:
    """lhn_functions with the fallback after every dmidecode assignment of
    moboUUID in didMotherboardChange; unchanged when already there."""
    span = find_function(text, FUNCTION, PATH)
    found = 0
    inserts: list[tuple[int, str]] = []
    for k, tok in enumerate(span.body(), start=span.first):
        if tok.kind != "word" or not _ASSIGN.match(tok.text):
            continue
        found += 1
        end = statement_end(span.tokens, k)
        if end is None or end.end > span.close.start:
            raise EditError(
                f"{PATH}: the moboUUID assignment in function {FUNCTION} shares its line "
                "with the closing brace; cannot place the fallback"
            )
        if text[end.end :].lstrip(" \t").startswith(BEGIN):
            continue  # already applied after this one
        block = fallback_block(indent_of(text, tok.start), newline_at(text, tok.start))
        inserts.append((end.end, block))
    if not found:
        raise EditError(
            f"{PATH}: no assignment of moboUUID from dmidecode in function {FUNCTION}",
            hint="this VSA release differs from the known ones; --skip mobo-uuid bypasses the edit",
        )
    for pos, block in reversed(inserts):
        text = text[:pos] + block + text[pos:]
    return text


class MoboUuid:
    name = "mobo-uuid"
    title = "Motherboard UUID fallback for Xen (lhn_functions)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return (PATH,)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return ()

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        text = require_text(snap, PATH, self.name)
        new = patch(text)
        return decide(self.name, text_write(snap, PATH, new), {"file": PATH, "function": FUNCTION})

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        return is_fixed_point(snap.text(PATH), patch)
