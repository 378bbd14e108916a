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
from dataclasses import dataclass

from vsaimage.edits import EditContext, Snapshot, StepPlan, decide, text_write
from vsaimage.edits.shell import FunctionSpan, Token, find_function, in_command_position, statement_end
from vsaimage.edits.shellflow import Place, branch_count, line_of, places
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
_DECLARE = frozenset({"local", "export", "readonly", "typeset", "declare"})
_SKIP = "--skip mobo-uuid converts without this edit"

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


@dataclass(frozen=True)
class _Assignment:
    index: int  # token index of the dmidecode assignment
    end: Token  # the newline ending its statement: the fallback goes after it


def _our_blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the fallback blocks already in `text`."""
    blocks = []
    start = text.find(BEGIN)
    while start >= 0:
        end = text.find(END, start)
        end = len(text) if end < 0 else end + len(END)
        blocks.append((start, end))
        start = text.find(BEGIN, end)
    return blocks


def _where(text: str, tok: Token) -> str:
    line, content = line_of(text, tok.start)
    return f"{PATH}:{line} `{content}`"


def _scan(text: str) -> tuple[FunctionSpan, list[_Assignment], list[str]]:
    """The dmidecode assignments of didMotherboardChange, after each of which
    the fallback goes, and the later assignments that may overwrite it under
    a condition we cannot judge. EditError for the shapes where the fallback
    would silently not run: after a `return`/`exit` on the same statement, in
    one branch of an `if` (or in a `case` or loop) while another path has no
    fallback, or before a statement that overwrites moboUUID on every path."""
    span = find_function(text, FUNCTION, PATH)
    where = places(span)
    blocks = _our_blocks(text)
    found: list[_Assignment] = []
    for k, tok in enumerate(span.body(), start=span.first):
        if tok.kind != "word" or not _ASSIGN.match(tok.text):
            continue
        end = statement_end(span.tokens, k)
        if end is None or end.end > span.close.start:
            raise EditError(
                f"{PATH}: the moboUUID assignment in function {FUNCTION} shares its line "
                "with the closing brace; cannot place the fallback"
            )
        stop = span.tokens.index(end)
        for j in range(k + 1, stop):
            word = span.tokens[j].text
            if word in ("return", "exit") and in_command_position(span.tokens, j):
                raise EditError(
                    f"{_where(text, tok)}: the fallback would land after `{word}` and never run",
                    hint=_SKIP,
                )
        found.append(_Assignment(k, end))
    if not found:
        raise EditError(
            f"{PATH}: no assignment of moboUUID from dmidecode in function {FUNCTION}",
            hint="this VSA release differs from the known ones; --skip mobo-uuid bypasses the edit",
        )
    _require_every_branch(text, span, where, found)
    notes: list[str] = []
    for k in range(span.first, span.last):
        tok = span.tokens[k]
        if not _overwrites(span, k) or any(a <= tok.start < b for a, b in blocks):
            continue
        for a in found:
            if a.end.end > tok.start:
                continue  # not after this assignment's fallback
            if where[k].within(where[a.index]):
                raise EditError(
                    f"{_where(text, tok)}: overwrites moboUUID after the Xen fallback on every path",
                    hint=_SKIP,
                )
            note = f"{_where(text, tok)} may overwrite moboUUID after the fallback"
            if not _elsewhere(where[k], where[a.index]) and note not in notes:
                notes.append(note)
    return span, found, notes


def _overwrites(span: FunctionSpan, k: int) -> bool:
    """Token k assigns moboUUID a value not derived from it (and not from
    dmidecode: that assignment gets a fallback of its own)."""
    tok = span.tokens[k]
    if tok.kind != "word" or not tok.text.startswith("moboUUID=") or _ASSIGN.match(tok.text):
        return False
    prev = span.tokens[k - 1].text if k > 0 else ""
    if not in_command_position(span.tokens, k) and prev not in _DECLARE:
        return False
    value = tok.text[len("moboUUID=") :]
    return "$moboUUID" not in value and "${moboUUID" not in value


def _elsewhere(later: Place, first: Place) -> bool:
    """`later` sits in another branch of a compound command that also holds
    `first`: no path runs both."""
    for a, b in zip(later.frames, first.frames, strict=False):
        if a.open == b.open and a.branch != b.branch:
            return True
        if a != b:
            return False
    return False


def _require_every_branch(
    text: str, span: FunctionSpan, where: dict[int, Place], found: list[_Assignment]
) -> None:
    """Every compound command around an assignment must have a fallback on
    each of its paths: an `if` with an `else` and one in every branch."""
    covered: dict[int, set[int]] = {}
    for a in found:
        for frame in where[a.index].frames:
            covered.setdefault(frame.open, set()).add(frame.branch)
    for a in found:
        for frame in where[a.index].frames:
            if frame.kind == "group" and not frame.guarded:
                continue
            tok = span.tokens[a.index]
            if frame.kind != "if" or frame.guarded:
                raise EditError(
                    f"{_where(text, tok)}: in a `{span.tokens[frame.open].text}` that may not run it, "
                    "the fallback would not run on every boot",
                    hint=_SKIP,
                )
            count, has_else = branch_count(span, frame)
            if not has_else or covered[frame.open] != set(range(count)):
                raise EditError(
                    f"{_where(text, tok)}: in one branch of an `if`; the other paths would get no fallback",
                    hint=_SKIP,
                )


def patch(text: str) -> str:
    """lhn_functions with the fallback after every dmidecode assignment of
    moboUUID in didMotherboardChange; unchanged when already there."""
    span, found, _notes = _scan(text)
    inserts: list[tuple[int, str]] = []
    for a in found:
        if text[a.end.end :].lstrip(" \t").startswith(BEGIN):
            continue  # already applied after this one
        tok = span.tokens[a.index]
        inserts.append((a.end.end, fallback_block(indent_of(text, tok.start), newline_at(text, tok.start))))
    for pos, block in reversed(inserts):
        text = text[:pos] + block + text[pos:]
    return text


def notes(text: str) -> list[str]:
    """Later assignments of moboUUID that run only under a condition: the
    report names them, since the fallback holds only when they do not run."""
    return _scan(text)[2]


class MoboUuid:
    name = "mobo-uuid"
    title = "Motherboard UUID fallback for Xen (lhn_functions)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return (PATH,)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return ()

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        text = require_text(snap, PATH, self.name)
        details: dict[str, object] = {"file": PATH, "function": FUNCTION}
        found = notes(text)
        if found:
            details["conditional_overwrites"] = found
        return decide(self.name, text_write(snap, PATH, patch(text)), details)

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        return is_fixed_point(snap.text(PATH), patch)
