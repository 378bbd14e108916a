"""Edit 4, `platform`: use the VMware platform description on Xen.

brand.init knows no Xen brand; with the /dev/scsi names of the udev edit the
VMware disk layout is right, so base_init makes platform.xml a symlink to
platform.xml.vmw before it does anything else.

A later statement of base_init that writes over that path would undo the
link: the edit refuses only when one provably does on every path through
the function (paths compared as paths, variables resolved as the script
assigns them: shellflow.py, shellvars.py); one that may, or does only under
a condition, is a note the report shows. Statements of the helpers
base_init calls count where the call is.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from vsaimage.edits import EditContext, Snapshot, StepPlan, decide, text_write
from vsaimage.edits.shellflow import Reach, Verdict, Visit, Walker, entry_env, overall, where
from vsaimage.edits.shelltree import FunctionDef, Group, Simple, definitions, functions, parse
from vsaimage.edits.shellvars import Value, absolute, basename, expand, names_path
from vsaimage.edits.textfile import indent_of, indent_unit, is_fixed_point, line_end, newline_at, require_text
from vsaimage.errors import EditError

PATH = "/etc/lefthand/brand/brand.init"
FUNCTION = "base_init"
ROOT = "/etc/lefthand"
VMW = "platform.xml.vmw"
MARKER = "# vsaimage: Xen uses the VMware disk layout"
_HINT = "--skip platform converts without this edit"
# Redirections that open their target for writing (`>&file` is bash's `&>file`).
_WRITE_REDIRECTS = frozenset({">", ">>", ">|", "<>", "&>", "&>>", ">&"})
# Options that take a value, by command: their value is no operand.
_VALUED = {"ln": "St", "cp": "St", "mv": "St", "install": "mogSt", "rm": "", "unlink": "", "tee": ""}
_LONG_VALUED = frozenset({"--target-directory", "--suffix", "--mode", "--owner", "--group"})


def platform_dir(paths: frozenset[str], text: str) -> str:
    """The directory under /etc/lefthand holding platform.xml.vmw; where
    there are several, the one brand.init (`text`) names (itself, or its
    platform.xml or platform.xml.vmw)."""
    found = sorted(
        posixpath.dirname(p) for p in paths if p.startswith(ROOT + "/") and posixpath.basename(p) == VMW
    )
    if len(found) > 1:
        named = [d for d in found if _named(text, d)]
        if len(named) == 1:
            return named[0]
    if len(found) != 1:
        where = ", ".join(found) if found else "none"
        which = f", and {PATH} does not name exactly one of them" if found else ""
        raise EditError(
            f"expected exactly one {VMW} under {ROOT}, found {len(found)} ({where}){which}",
            hint="--skip platform bypasses the edit",
        )
    return found[0]


def _named(text: str, directory: str) -> bool:
    """Whether a word of brand.init, resolved where it runs, is `directory`,
    its platform.xml or its platform.xml.vmw."""
    targets = (directory, f"{directory}/platform.xml", f"{directory}/{VMW}")
    found = False

    def visit(v: Visit) -> None:
        nonlocal found
        if not isinstance(v.node, Simple) or v.reach is Reach.NONE:
            return
        words = [w.text.split("=", 1)[1] for w in v.node.assignments]
        words += [w.text for w in v.node.args] + [r.target.text for r in v.node.redirects]
        for word in words:
            value = absolute(expand(word, v.env, split=False).value, v.cwd)
            found = found or any(names_path(value, t).sure for t in targets)

    tree = parse(text)
    table = functions(tree)
    Walker(table, visit=visit).run(tree, {})
    for name, defs in table.items():
        env = entry_env(tree, table, name)
        for definition in defs:
            Walker(table, visit=visit).run(definition.body, env, name)
    return found


def link_line(directory: str) -> str:
    return f"ln -sf {VMW} {directory}/platform.xml  {MARKER}"


def patch(text: str, directory: str) -> str:
    """brand.init with the symlink made first thing in base_init (in each of
    its definitions); a line of ours naming another directory is replaced,
    an identical one kept. EditError when a later statement provably
    replaces the link on every path (see judge)."""
    return _patch(text, directory)[0]


def _patch(text: str, directory: str) -> tuple[str, Verdict]:
    """The patched text, and what judge found (its notes for the report)."""
    verdict = judge(text, directory)
    if verdict.refusals:
        raise EditError(verdict.refusals[0], hint=_HINT)
    for body in sorted((g for _, g in definitions(text, parse(text), FUNCTION, PATH)),
                       key=lambda g: -g.start):
        text = _put_line(text, body, link_line(directory))
    return text, verdict


def _put_line(text: str, body: Group, wanted: str) -> str:
    body_start = line_end(text, body.open.end)
    assert body.close is not None  # definitions() refuses an unclosed body
    body_end = text.rfind("\n", 0, body.close.start) + 1
    pos = body_start
    while pos < body_end:
        end = line_end(text, pos)
        line = text[pos:end]
        if line.strip().endswith(MARKER):
            content = line.rstrip("\r\n")
            ours = indent_of(text, pos) + wanted
            return text if content == ours else text[:pos] + ours + text[pos + len(content) :]
        pos = end
    first = _first_body_line(text, body_start, body_end)
    indent = indent_of(text, first) if first is not None else indent_of(text, body.open.start)
    if first is None:
        indent += indent_unit(indent)
    line = indent + wanted + newline_at(text, body.open.start)
    return text[:body_start] + line + text[body_start:]


def _first_body_line(text: str, start: int, stop: int) -> int | None:
    pos = start
    while pos < stop:
        end = line_end(text, pos)
        if text[pos:end].strip():
            return pos
        pos = end
    return None


def judge(text: str, directory: str) -> Verdict:
    """The statements of base_init (and of the helpers it calls) after our
    line that write over `<directory>/platform.xml`: refusals where one
    does on every path, notes where one may or does under a condition."""
    tree = parse(text)
    table = functions(tree)
    link = f"{directory}/platform.xml"
    env = entry_env(tree, table, FUNCTION)
    verdicts = []
    for _, body in definitions(text, tree, FUNCTION, PATH):
        verdict = Verdict()

        def visit(v: Visit, verdict: Verdict = verdict) -> None:
            _judge_visit(text, v, link, verdict)

        Walker(table, visit=visit, opaque=_ours(text)).run(body, env, FUNCTION)
        verdicts.append(verdict)
    return overall(verdicts, FUNCTION)


def _judge_visit(text: str, v: Visit, link: str, verdict: Verdict) -> None:
    if v.reach is Reach.NONE:
        return
    matches = [(w, names_path(absolute(w.value, v.cwd), link)) for w in _writes(v, link)]
    maybe = [(w, m) for w, m in matches if m.maybe]
    if not maybe:
        return
    at = where(text, PATH, v.node.start, v.calls, FUNCTION)
    if any(w.sure and m.sure for w, m in maybe):
        if v.reach is Reach.ALL:
            verdict.refusals.append(f"{at} replaces platform.xml later in {FUNCTION}, "
                                    "undoing the link to the VMware description")
        else:
            verdict.note(f"{at} replaces the link to the VMware description where it runs "
                         f"(not on every path through {FUNCTION})")
        return
    w, m = maybe[0]  # the target itself comes before the file of the source's name in it
    verdict.note(f"{at} may replace the link to the VMware description; {w.why if m.sure else m.why}")


@dataclass(frozen=True)
class _Write:
    value: Value  # a path the command may write over (relative: to the working directory)
    sure: bool = True  # False: only if a condition of its own holds
    why: str = ""  # that condition


def _writes(v: Visit, link: str) -> list[_Write]:
    """The paths a command replaces, removes or writes into: its
    redirections' targets, and the operands of ln -f, cp, mv, install,
    rm, unlink and tee that are written (a directory operand: the file of
    the source's name in it; rm -r: everything below its operands)."""
    node = v.node
    if isinstance(node, FunctionDef):
        return []
    out = [_Write(expand(r.target.text, v.env, glob=True).value) for r in node.redirects
           if r.op in _WRITE_REDIRECTS and not (r.op == ">&" and r.target.text.strip("-").isdigit())]
    if not isinstance(node, Simple) or not node.args:
        return out
    names = expand(node.args[0].text, v.env).value.strings
    command = posixpath.basename(next(iter(names))) if names is not None and len(names) == 1 else None
    if command not in _VALUED:
        return out
    args = [expand(w.text, v.env, glob=True).value for w in node.args[1:]]
    flags, target_dir, operands = _options(command, args)
    if command in ("rm", "unlink"):
        out += [_Write(o) for o in operands]
        if flags & {"r", "R", "recursive"}:
            below = [link[len(d) :] for d in _ancestors(link)]
            out += [_Write(o + Value.text(rest)) for o in operands for rest in below]
        return out
    if command == "tee":
        return out + [_Write(o) for o in operands]
    if (command == "ln" and not flags & {"f", "force"}) or flags & {"n", "no-clobber"} or (
            command == "install" and flags & {"d", "directory"}):
        return out  # ln without -f, cp/mv -n fail on an existing file; install -d makes directories
    sure = not flags & {"u", "update"}
    why = "" if sure else f"{command} -u writes only over an older file"
    if target_dir is not None:
        return out + [_Write(target_dir + Value.text("/") + basename(s), sure, why) for s in operands]
    if len(operands) == 1 and command == "ln":  # ln -sf SOURCE: a link named like it, here
        return [*out, _Write(basename(operands[0]), sure, why)]
    if len(operands) < 2:
        return out
    *sources, target = operands
    if len(sources) == 1:
        out.append(_Write(target, sure, why))
    if not flags & {"T", "no-target-directory"}:
        out += [_Write(target + Value.text("/") + basename(s), sure, why) for s in sources]
    return out


def _ancestors(path: str) -> list[str]:
    """/a/b/c -> [/a/b, /a] (not /: no rm -r of it is judged)."""
    out = []
    while path.count("/") > 1:
        path = path.rsplit("/", 1)[0]
        out.append(path)
    return out


def _options(command: str, args: list[Value]) -> tuple[set[str], Value | None, list[Value]]:
    """(option letters and long names, the -t directory, operands)."""
    flags: set[str] = set()
    target_dir: Value | None = None
    operands: list[Value] = []
    pending: str | None = None
    done = False
    for arg in args:
        strings = arg.strings
        word = next(iter(strings)) if strings is not None and len(strings) == 1 else None
        if pending is not None:
            target_dir = arg if pending == "t" else target_dir
            pending = None
        elif done or word is None or not word.startswith("-") or word == "-":
            operands.append(arg)
        elif word == "--":
            done = True
        elif word.startswith("--"):
            name, eq, value = word[2:].partition("=")
            flags.add(name)
            if name == "target-directory" and eq:
                target_dir = Value.text(value)
            elif "--" + name in _LONG_VALUED and not eq:
                pending = "t" if name == "target-directory" else "x"
        else:
            for k, letter in enumerate(word[1:]):
                flags.add(letter)
                if letter in _VALUED[command]:
                    rest = word[k + 2 :]
                    if rest:
                        target_dir = Value.text(rest) if letter == "t" else target_dir
                    else:
                        pending = letter
                    break
    return flags, target_dir, operands


def _ours(text: str) -> tuple[tuple[int, int], ...]:
    """The lines of ours (the link line) the judgement steps over."""
    out = []
    pos = 0
    while pos < len(text):
        end = line_end(text, pos)
        if text[pos:end].strip().endswith(MARKER):
            out.append((pos, end))
        pos = end
    return tuple(out)


class Platform:
    name = "platform"
    title = "platform.xml -> platform.xml.vmw in base_init (brand.init)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return (PATH,)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return (ROOT,)

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        text = require_text(snap, PATH, self.name)
        directory = platform_dir(snap.paths, text)
        new, verdict = _patch(text, directory)  # refuses a statement that provably undoes the link
        details: dict[str, object] = {"file": PATH, "link": f"{directory}/platform.xml -> {VMW}"}
        if verdict.notes:
            details["notes"] = verdict.notes
        return decide(self.name, text_write(snap, PATH, new), details)

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        text = snap.text(PATH)
        return text is not None and is_fixed_point(text, lambda t: patch(t, platform_dir(snap.paths, t)))
