"""Edit 1, `mobo-uuid`: give didMotherboardChange a motherboard UUID on Xen.

lhn_functions reads the UUID with dmidecode, which finds no DMI table on a PV
domU and prints nothing; the VSA then believes it moved to new hardware on
every boot. Right after each dmidecode assignment (after the list of commands
holding it: `A; B` on one line is split there) we insert a fallback that
only runs when the value is empty: the domain UUID from /sys/hypervisor/uuid,
else a UUID derived from eth0's MAC (the xl config pins both, so the value is
the same on every boot), else a constant.

The edit refuses only what provably defeats it (shellflow.py judges every
path): no dmidecode assignment that can run, one whose own line always
leaves the function before the fallback, one made read-only, or a later
statement that overwrites moboUUID on every path after the fallback. What
only may defeat it is a note: a line that may leave before the fallback, a
fallback that runs only on some paths while moboUUID is read on others, a
later assignment that runs only under a condition or may outlive its
command.

Longer than 400 lines on purpose: the edit, its stop rules and its
postcondition read one function the same way and are kept side by side,
as every edit module keeps its transform and its check.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from vsaimage.edits import EditContext, Snapshot, StepPlan, decide, text_write
from vsaimage.edits.shellflow import Reach, Verdict, Visit, Walker, assigns, entry_env, overall, where
from vsaimage.edits.shelltree import (
    AndOr,
    Block,
    FunctionDef,
    Group,
    Loop,
    Simple,
    children,
    commands,
    definitions,
    functions,
    parse,
)
from vsaimage.edits.shellvars import Hole, Value, expand, reads
from vsaimage.edits.textfile import indent_of, indent_unit, is_fixed_point, line_end, newline_at, require_text
from vsaimage.errors import EditError

PATH = "/etc/init.d/lhn_functions"
FUNCTION = "didMotherboardChange"
VAR = "moboUUID"
# First three groups generated once with uuidgen (by the seed's author); the
# last group is the MAC, so a cloned VM with a new MAC is a "new motherboard".
UUID_PREFIX = "160d007e-0f9e-11e1-b59f-"
NO_MAC = "deadb33fc0de"
BEGIN = "# vsaimage: Xen fallback for moboUUID"
END = "# vsaimage: end of Xen fallback for moboUUID"
_SKIP = "--skip mobo-uuid converts without this edit"
_HEX12 = re.compile(r"[0-9a-f]{12}")
_FUNCTION_SCOPE = frozenset({"local", "declare", "typeset"})
# What the fallback leaves in moboUUID: not known, but never empty.
FALLBACK = Hole("the fallback's value", nonempty=True)
_LEAVING = frozenset({"return", "exit", "exec"})
_SPECIAL = frozenset({":", ".", "eval", "exec", "exit", "export", "readonly", "return", "set", "shift",
                      "times", "trap", "unset", "break", "continue"})

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


def _our_blocks(text: str) -> tuple[tuple[int, int], ...]:
    """(start, end) offsets of the fallback blocks already in `text`."""
    blocks = []
    start = text.find(BEGIN)
    while start >= 0:
        end = text.find(END, start)
        end = len(text) if end < 0 else end + len(END)
        blocks.append((start, end))
        start = text.find(BEGIN, end)
    return tuple(blocks)


@dataclass(frozen=True)
class _Assignment:
    node: Simple  # the dmidecode assignment
    list: AndOr  # the list holding it: the fallback goes after it
    reach: Reach  # from the function's start
    readonly: bool


@dataclass
class _Scan:
    assignments: list[_Assignment]
    verdict: Verdict


def _lists(block: Block) -> dict[int, AndOr]:
    """The list holding each simple command of a function body (by the
    command's offset), nested ones included."""
    out: dict[int, AndOr] = {}
    for item in block:
        for pipeline in item.pipelines:
            for command in pipeline.commands:
                if isinstance(command, Simple):
                    out[command.start] = item
                elif not isinstance(command, FunctionDef):
                    for inner in children(command):
                        out.update(_lists(inner))
    return out


def _runs_dmidecode(node: Simple, index: int, env: dict[str, Value],
                    table: dict[str, list[FunctionDef]]) -> bool:
    """Whether the command substitutions of word `index` run dmidecode:
    named by a word (a path, or a variable holding one), or inside a
    function of the file they call."""
    return any(_block_runs(sub, env, table, set()) for i, sub in node.subs if i == index)


def _block_runs(block: Block, env: dict[str, Value], table: dict[str, list[FunctionDef]],
                seen: set[str]) -> bool:
    for command in commands(block):
        if not isinstance(command, Simple):
            continue
        for word in command.words:
            strings = expand(word.text, env).value.strings or frozenset()
            if any(posixpath.basename(s) == "dmidecode" for s in strings):
                return True
        name = command.args[0].text if command.args else ""
        if name in table and name not in seen:
            seen.add(name)
            bodies = [d.body.body for d in table[name] if isinstance(d.body, Group)]
            if any(_block_runs(b, env, table, seen) for b in bodies):
                return True
    return False


def _scan(text: str) -> _Scan:
    """The dmidecode assignments of didMotherboardChange, after each of
    which the fallback goes, and what may defeat it (see the module's
    docstring)."""
    tree = parse(text)
    table = functions(tree)
    env = entry_env(tree, table, FUNCTION)
    opaque = _our_blocks(text)
    found: list[_Assignment] = []
    verdicts = []
    for _, body in definitions(text, tree, FUNCTION, PATH):
        owners = _lists(body.body)
        mine: dict[int, _Assignment] = {}

        def visit(v: Visit, mine: dict[int, _Assignment] = mine, owners: dict[int, AndOr] = owners) -> None:
            node = v.node
            if not isinstance(node, Simple) or v.calls or v.persists != "yes" or node.start not in owners:
                return
            if not _from_dmidecode(node, dict(v.env), table):
                return
            old = mine.get(node.start)
            best = v.reach if old is None else max(old.reach, v.reach)
            mine[node.start] = _Assignment(node, owners[node.start], Reach(best), _readonly(node))

        walker = Walker(table, visit=visit, opaque=opaque)
        walker.run(body, env, FUNCTION)
        assignments = sorted(mine.values(), key=lambda a: a.node.start)
        found += assignments
        verdicts.append(_judge(text, table, env, opaque, body, assignments, walker))
    if not found:
        raise EditError(
            f"{PATH}: no assignment of moboUUID from dmidecode in function {FUNCTION}",
            hint="this VSA release differs from the known ones; --skip mobo-uuid bypasses the edit",
        )
    verdict = overall(verdicts, FUNCTION)
    if not any(a.reach is not Reach.NONE for a in found):
        first = found[0]
        raise EditError(f"{where(text, PATH, first.node.start, (), FUNCTION)}: no assignment of moboUUID "
                        f"from dmidecode in {FUNCTION} is ever reached; the fallback would never run",
                        hint=_SKIP)
    return _Scan(found, verdict)


def _from_dmidecode(node: Simple, env: dict[str, Value], table: dict[str, list[FunctionDef]]) -> bool:
    """Whether the command assigns moboUUID (in the shell: alone, or with
    local/export/...) a value that runs dmidecode."""
    first = len(node.assignments) + 1 if node.args else 0
    if node.args and node.args[0].text not in (*_FUNCTION_SCOPE, "export", "readonly"):
        return False
    return any(word.text.startswith(VAR + "=") and _runs_dmidecode(node, index, env, table)
               for index, word in enumerate(node.words) if index >= first)


def _readonly(node: Simple) -> bool:
    """readonly, or declare/typeset/local -r: the fallback could not assign it."""
    if not node.args:
        return False
    name, options = node.args[0].text, [w.text for w in node.args[1:] if w.text.startswith("-")]
    return name == "readonly" or (name in _FUNCTION_SCOPE and any("r" in o for o in options))


def _judge(text: str, table: dict[str, list[FunctionDef]], env: dict[str, Value],
           opaque: tuple[tuple[int, int], ...], body: Group, assignments: list[_Assignment],
           entry: Walker) -> Verdict:
    """What defeats the fallbacks of one definition (`entry`: its walk from
    the start, which met every list): the rules of the module's docstring,
    for the assignments that can run."""
    verdict = Verdict()
    live = [a for a in assignments if a.reach is not Reach.NONE]
    for a in live:
        at = where(text, PATH, a.node.start, (), FUNCTION)
        if a.readonly:
            verdict.refusals.append(f"{at}: moboUUID is made read-only there; the fallback's assignment "
                                    "would abort the script")
            continue
        _, flow = entry.lists[a.list.start]
        word = _leaving_word(a.list)
        if not flow.falls:
            verdict.refusals.append(f"{at}: the fallback would land after `{word}` and never run")
        elif flow.leaves & {"return", "exit"}:
            verdict.note(f"{at} may `{word}` before the fallback: it runs only where this line does not")
    if live:
        _coverage(text, table, env, opaque, body, live, verdict)
    ours = frozenset(a.node.start for a in assignments)  # each gets a fallback of its own
    for a in live:
        _overwrites(text, table, env, opaque, body, a, ours, verdict)
    return verdict


def _leaving_word(item: AndOr) -> str:
    """The command of the list that leaves: `return`, `exit`, `exec`, else
    the last one (a helper that exits)."""
    names = [c.args[0].text for p in item.pipelines for c in p.commands if isinstance(c, Simple) and c.args]
    return next((n for n in names if n in _LEAVING), names[-1] if names else "return")


def _coverage(text: str, table: dict[str, list[FunctionDef]], env: dict[str, Value],
              opaque: tuple[tuple[int, int], ...], body: Group, live: list[_Assignment],
              verdict: Verdict) -> None:
    """A read of moboUUID, after the first assignment, that a path reaches
    without passing any fallback: the fallback runs only where its branch
    does, and this path may meet an empty UUID under Xen."""
    after = live[0].list.end
    lines = ("lines " if len(live) > 1 else "line ") + ", ".join(
        str(text.count("\n", 0, a.node.start) + 1) for a in live)

    def visit(v: Visit) -> None:
        node = v.node
        place = v.calls[0].start if v.calls else node.start
        if v.reach is Reach.NONE or place <= after or isinstance(node, FunctionDef):
            return
        words = [*(node.words if isinstance(node, Simple) else ()), *(r.target for r in node.redirects)]
        if any(reads(w.text, VAR) for w in words):
            verdict.note(f"{where(text, PATH, node.start, v.calls, FUNCTION)} reads moboUUID on a path "
                         f"that skips the fallback (the dmidecode assignment, {lines}, "
                         "runs only on some paths)")

    Walker(table, visit=visit, opaque=opaque, stops=frozenset(a.list.start for a in live)).run(
        body, env, FUNCTION)


def _overwrites(text: str, table: dict[str, list[FunctionDef]], env: dict[str, Value],
                opaque: tuple[tuple[int, int], ...], body: Group, a: _Assignment, ours: frozenset[int],
                verdict: Verdict) -> None:
    """Statements after this assignment's fallback that assign moboUUID
    anew: refused on every path, a note on some."""

    def visit(v: Visit) -> None:
        if v.reach is Reach.NONE or VAR in v.shadowed or v.node.start in ours:
            return
        sure, why = _assigns_anew(v, table)
        if not sure and not why:
            return
        at = where(text, PATH, v.node.start, v.calls, FUNCTION)
        if sure and v.reach is Reach.ALL:
            verdict.refusals.append(f"{at}: overwrites moboUUID after the Xen fallback on every path")
        elif sure:
            verdict.note(f"{at} may overwrite moboUUID after the fallback (it runs only on some paths)")
        else:
            verdict.note(f"{at} may overwrite moboUUID after the fallback ({why})")

    Walker(table, visit=visit, opaque=opaque, start=a.list.start,
           start_env={VAR: Value.unknown(FALLBACK.name, nonempty=True)}).run(body, env, FUNCTION)


def _assigns_anew(v: Visit, table: dict[str, list[FunctionDef]]) -> tuple[bool, str]:
    """(it surely assigns moboUUID a value not derived from the fallback's,
    or else why it may)."""
    node = v.node
    if isinstance(node, Loop):
        if node.var is None or node.var.text != VAR:
            return False, ""
        values = [expand(w.text, v.env).value for w in node.items or ()]
        return (True, "") if any(x.empty() is False for x in values) else (False, "a loop that may not run")
    if not isinstance(node, Simple):
        return False, ""
    if v.persists == "no":
        return False, ""
    command = expand(node.args[0].text, v.env).value.strings if node.args else None
    name = next(iter(command)) if command is not None and len(command) == 1 else None
    sure, why = _assignment_effect(node, name, v, table)
    if v.persists == "maybe" and (sure or why):
        return False, "the last command of a pipeline runs in the shell in ksh"
    return sure, why


def _assignment_effect(node: Simple, name: str | None, v: Visit,
                       table: dict[str, list[FunctionDef]]) -> tuple[bool, str]:
    args = [w.text for w in node.args[1:]]
    if name == "unset" and VAR in args and "-f" not in args:
        return True, ""
    if name in ("read", "getopts") and VAR in args:
        return True, ""
    if name in (".", "source"):
        return False, f"`{name}` runs a file that may assign it"
    if name == "eval" and any(reads(a, VAR) or VAR + "=" in a for a in args):
        return False, "`eval` may assign it"
    for var, value in assigns(node):
        if var != VAR:
            continue
        if node.args and node.args[0].text in _FUNCTION_SCOPE:
            if v.calls:
                continue  # a helper's own variable from here on
            if value is None:
                if VAR in v.declared:
                    continue  # already the function's own: declaring it again keeps it
                return False, "bash empties a variable a `local` without a value declares"
        if value is not None:
            return not _derived(value, v), ""
    for word in node.assignments if node.args else ():
        var, _, value = word.text.partition("=")
        if var != VAR or _derived(value, v):
            continue
        if name in table:
            return False, "an assignment before a function call may outlive it"
        if name in _SPECIAL:
            return False, "an assignment before a special builtin outlives it in sh"
    return False, ""


def _derived(value: str, v: Visit) -> bool:
    """A value made from the fallback's (`${moboUUID:-x}`, a command
    substitution reading moboUUID) keeps it."""
    expanded = expand(value, v.env, split=False).value
    return expanded.has(FALLBACK) or (("$(" in value or "`" in value) and reads(value, VAR))


def _insertion(text: str, item: AndOr) -> tuple[int, int, bool]:
    """Where the fallback goes after the list `item`: (offset, offset of what
    follows on the line, whether that is more of the line)."""
    term = item.terminator
    if term is not None and term.text == "\n":
        return term.end, term.end, False
    pos = term.end if term is not None and term.text in (";", "&") else item.end
    rest = line_end(text, pos)
    tail = text[pos:rest].strip()
    if not tail or tail.startswith("#"):
        return rest, rest, False
    nxt = pos
    while text[nxt] in " \t":
        nxt += 1
    return pos, nxt, True


def patch(text: str) -> str:
    """lhn_functions with the fallback after every dmidecode assignment of
    moboUUID in didMotherboardChange; unchanged when already there."""
    return _patch(text)[0]


def _patch(text: str) -> tuple[str, Verdict]:
    """The patched text, and what the scan found (its notes for the report)."""
    scan = _scan(text)
    if scan.verdict.refusals:
        raise EditError(scan.verdict.refusals[0], hint=_SKIP)
    inserts: list[tuple[int, int, str]] = []
    for a in scan.assignments:
        pos, nxt, split = _insertion(text, a.list)
        if text[nxt:].lstrip(" \t").startswith(BEGIN):
            continue  # already applied after this one
        indent = indent_of(text, a.node.start)
        newline = newline_at(text, a.node.start)
        block = fallback_block(indent, newline)
        inserts.append((pos, nxt, newline + block + indent if split else block))
    for pos, nxt, block in sorted(inserts, reverse=True):
        text = text[:pos] + block + text[nxt:]
    return text, scan.verdict


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
        new, verdict = _patch(text)
        if verdict.notes:
            details["notes"] = verdict.notes
        return decide(self.name, text_write(snap, PATH, new), details)

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        return is_fixed_point(snap.text(PATH), patch)
