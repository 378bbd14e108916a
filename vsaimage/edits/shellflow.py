"""Which statements of a shell function run on every path, on some or on
none, and what its variables hold when they do: an abstract run of the
script over the tree of shelltree.py, with the values of shellvars.py.

The script edits insert a line and then trust it; an insertion that lands
where it does not run, or before a statement that undoes it, does nothing at
boot while `verify` still finds it in place. A walk visits every simple
command (and every compound command's redirections) of a function with its
`Reach`, the variables it sees, and the helper calls that led there:

- `if`/`case` branches, loops, `&&`/`||` and the statements after a
  `return`/`exit` that may run are reached on SOME paths; a condition the
  script settles (`if false`, `[ -n "$X" ]` with X known, a `case` on a
  known word) decides its branch;
- a call (in command position) to a function of the same file is followed,
  once per call chain, and its statements are judged where the call is;
- `( )`, `$( )`, `&` and the commands of a pipeline run in a subshell: what
  they assign does not outlive them (`persists`), nor does their `exit`;
- `.`/`source` and `eval` may assign anything: every variable is unknown
  after them.

Taken for granted: a command that is not a function of the file (nor a
builtin) is a program, which cannot assign the script's variables or leave
its function; `set -e` is not followed (a failing command is taken to let
the script go on).

Longer than 400 lines on purpose: the walk is one recursive visitor over
every node type of shelltree.py, and its cases call each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Literal

from vsaimage.edits.shelltree import (
    AndOr,
    Block,
    Case,
    Command,
    FunctionDef,
    Group,
    If,
    Loop,
    Pipeline,
    Simple,
    is_assignment,
    line_of,
)
from vsaimage.edits.shellvars import (
    EMPTY,
    Env,
    Value,
    absolute,
    case_matches,
    expand,
    joined,
    lookup,
    same,
    unknown_variable,
)

Persist = Literal["yes", "no", "maybe"]
# POSIX special builtins: an assignment before them outlives the command
# (in sh; not in bash outside POSIX mode).
_SPECIAL_BUILTINS = frozenset({":", ".", "eval", "exec", "exit", "export", "readonly", "return", "set",
                               "shift", "times", "trap", "unset", "break", "continue"})
_DECLARATIONS = frozenset({"local", "export", "readonly", "typeset", "declare"})
Status = frozenset[int]  # the exit statuses a command may end with: 0, 1 (any failure)
_ANY: Status = frozenset({0, 1})


class Reach(IntEnum):
    """Of the paths from where a walk starts, how many reach a statement."""

    NONE = 0
    SOME = 1
    ALL = 2


def reach(must: bool, can: bool) -> Reach:
    return Reach.ALL if must and can else Reach.SOME if can else Reach.NONE


@dataclass(frozen=True)
class Call:
    name: str
    start: int  # offset of the calling command


@dataclass(frozen=True)
class Visit:
    """A command as the walk meets it: `node` is a simple command, or a
    compound one for its redirections and its loop variable."""

    node: Command
    env: Env  # before the command's own assignments
    cwd: Value
    reach: Reach
    calls: tuple[Call, ...]  # the helper calls that led here, outermost first
    persists: Persist  # whether what it assigns outlives it
    shadowed: frozenset[str]  # declared `local` by a helper between the walked function and here
    declared: frozenset[str]  # declared `local` earlier in its own function


@dataclass(frozen=True)
class Flow:
    """How a statement ends: whether some path falls through to the next,
    and how it may leave instead (`return`, `exit`, `break` out of a loop,
    `stop` at a point the walk ends paths at)."""

    falls: bool = True
    leaves: frozenset[str] = frozenset()


@dataclass
class State:
    env: dict[str, Value]
    cwd: Value
    must: bool = True
    can: bool = True
    since: tuple[bool, bool] | None = None  # (must, can) counted from the start point

    def copy(self, *, must: bool | None = None, can: bool | None = None) -> State:
        return State(dict(self.env), self.cwd, self.must if must is None else must,
                     self.can if can is None else can, self.since)


@dataclass
class _Frame:
    name: str
    locals: dict[str, Value | None] = field(default_factory=dict)  # name -> the caller's value
    returns: list[dict[str, Value]] = field(default_factory=list)  # env at each `return`


@dataclass(frozen=True)
class _Ctx:
    frames: tuple[_Frame, ...]
    calls: tuple[Call, ...] = ()
    persists: Persist = "yes"

    @property
    def shadowed(self) -> frozenset[str]:
        return frozenset(n for f in self.frames[1:] for n in f.locals)


@dataclass
class Walker:
    """One walk. `visit` sees every command; `opaque`: (start, end) offsets
    of lines the walk steps over (vsaimage's own); `start`: the offset of the
    list after which paths are counted (`Visit.reach` is NONE before it, and
    `start_env` is set there); `stops`: offsets of lists after which the
    paths end; `record`: a function whose entry environments are kept in
    `entries`."""

    functions: dict[str, list[FunctionDef]]
    visit: Callable[[Visit], None] | None = None
    opaque: tuple[tuple[int, int], ...] = ()
    start: int | None = None
    start_env: dict[str, Value] = field(default_factory=dict)
    stops: frozenset[int] = frozenset()
    record: str | None = None
    entries: list[dict[str, Value]] = field(default_factory=list)
    lists: dict[int, tuple[Reach, Flow]] = field(default_factory=dict)  # and-or lists met: by start

    def run(self, body: Command | Block, env: Env, name: str = "") -> Flow:
        """Walk a function's body (or a script's lists) from its start."""
        st = State(dict(env), Value.unknown("the working directory"))
        ctx = _Ctx((_Frame(name),))
        if isinstance(body, tuple):
            return self.block(body, st, ctx)[1]
        return self.command(body, st, ctx)[1]

    def reach_of(self, st: State) -> Reach:
        if self.start is None:
            return reach(st.must, st.can)
        return reach(*st.since) if st.since is not None else Reach.NONE

    def seen(self, node: Command, st: State, ctx: _Ctx) -> None:
        if self.visit is not None:
            self.visit(Visit(node, dict(st.env), st.cwd, self.reach_of(st), ctx.calls, ctx.persists,
                             ctx.shadowed, frozenset(ctx.frames[-1].locals)))

    # --- lists ------------------------------------------------------------

    def block(self, items: Block, st: State, ctx: _Ctx) -> tuple[State, Flow]:
        falls, leaves = True, frozenset[str]()
        for item in items:
            if any(a <= item.start < b for a, b in self.opaque):
                continue
            st, flow, _ = self.and_or(item, st, ctx)
            falls, leaves = falls and flow.falls, leaves | flow.leaves
        return st, Flow(falls, leaves)

    def and_or(self, node: AndOr, st: State, ctx: _Ctx) -> tuple[State, Flow, Status]:
        if node.background:
            self.pipelines(node, st.copy(), replace(ctx, persists="no"))
            return st, Flow(), _ANY
        entry = reach(st.must, st.can)
        st, flow, status = self.pipelines(node, st, ctx)
        self.lists[node.start] = (entry, flow)
        if node.start == self.start and st.can:
            st.since = (True, True)
            st.env.update(self.start_env)
        if node.start in self.stops and st.can:
            st.must = st.can = False
            flow = Flow(False, flow.leaves | {"stop"})
        return st, flow, status

    def pipelines(self, node: AndOr, st: State, ctx: _Ctx) -> tuple[State, Flow, Status]:
        """Each pipeline runs where the statuses of the ones before let it:
        `alive` holds the statuses paths may have reached it with, `whole`
        whether no path has left the list yet."""
        alive: set[int] = {0}
        whole, leaves = True, frozenset[str]()
        env = st.env
        since = st.since
        for k, pipeline in enumerate(node.pipelines):
            wanted = 0 if k == 0 or node.ops[k - 1] == "&&" else 1
            every = whole and alive <= {wanted}
            some = wanted in alive
            entry = State(dict(env), st.cwd, st.must and every, st.can and some,
                          None if since is None else (since[0] and every, since[1] and some))
            out, flow, status = self.pipeline(pipeline, entry, ctx)
            if not some:
                continue  # walked for what it holds: no path runs it
            alive.discard(wanted)
            if flow.falls:
                alive |= status
            whole = whole and not flow.leaves
            leaves |= flow.leaves
            env = out.env if every else _join_env([env, out.env])
            st.cwd = out.cwd if every else st.cwd | out.cwd
            since = out.since if since is None else since
        falls = bool(alive)
        after = State(env, st.cwd, st.must and not leaves, st.can and falls,
                      None if since is None else (since[0] and not leaves and falls, since[1] and falls))
        return after, Flow(falls, leaves), frozenset(alive) or _ANY

    def pipeline(self, node: Pipeline, st: State, ctx: _Ctx) -> tuple[State, Flow, Status]:
        if len(node.commands) == 1:
            st, flow, status = self.command(node.commands[0], st, ctx)
        else:
            # Every command of a pipeline runs in a subshell (bash, dash, busybox);
            # ksh runs the last in the shell: what it assigns may outlive it.
            for command in node.commands[:-1]:
                self.command(command, st.copy(), replace(ctx, persists="no"))
            out, last, status = self.command(node.commands[-1], st.copy(), replace(ctx, persists="maybe"))
            st = State(_join_env([st.env, out.env]), st.cwd, st.must, st.can, st.since)
            flow = Flow(True, last.leaves - {"return", "exit", "break"})
        if node.negated:
            status = frozenset(1 - s for s in status)
        return st, flow, status

    # --- commands ---------------------------------------------------------

    def command(self, node: Command, st: State, ctx: _Ctx) -> tuple[State, Flow, Status]:
        if isinstance(node, Simple):
            return self.simple(node, st, ctx)
        if isinstance(node, FunctionDef):
            return st, Flow(), frozenset({0})
        if node.redirects:
            self.seen(node, st, ctx)
        if isinstance(node, Group):
            if node.subshell:
                self.block(node.body, st.copy(), replace(ctx, persists="no"))
                return st, Flow(), _ANY
            st, flow = self.block(node.body, st, ctx)
            return st, flow, _ANY
        if isinstance(node, If):
            return self.if_(node, st, ctx)
        if isinstance(node, Case):
            return self.case(node, st, ctx)
        return self.loop(node, st, ctx)

    def branches(self, st: State, runs: list[tuple[State, Flow]], rest: State | None) -> State:
        """The state after a compound command whose branches ended in `runs`
        (those that may run) and whose `rest` paths took none (None: there
        are none)."""
        leaves = frozenset[str]().union(*(f.leaves for _, f in runs))
        ends = [s for s, f in runs if f.falls and s.can] + ([rest] if rest is not None and rest.can else [])
        falls = bool(ends)
        env = _join_env([s.env for s in ends]) if ends else st.env
        cwd = joined([s.cwd for s in ends]) if ends else st.cwd
        if st.since is not None:
            since: tuple[bool, bool] | None = (st.since[0] and not leaves, st.since[1] and falls)
        else:
            inner = [s.since for s in ends if s.since is not None]
            since = (all(m for m, _ in inner), any(c for _, c in inner)) if inner else None
        return State(env, cwd, st.must and not leaves, st.can and falls, since)

    def if_(self, node: If, st: State, ctx: _Ctx) -> tuple[State, Flow, Status]:
        runs: list[tuple[State, Flow]] = []
        rest, open_ = st, True  # the paths no condition took so far; whether there are any
        for k, body in enumerate(node.bodies):
            if k == len(node.conditions):  # the else branch
                out, flow = self.block(body, rest, ctx)
                if open_:
                    runs.append((out, flow))
                open_ = False
                break
            (state, status), cflow = self.block_status(node.conditions[k], rest, ctx)
            if cflow.leaves and open_:  # a condition that may leave: a branch of its own
                runs.append((state.copy(can=False), Flow(False, cflow.leaves)))
            out, flow = self.block(body, self.entered(state, status == {0}, 0 in status), ctx)
            if 0 in status and open_:
                runs.append((out, flow))
            rest, open_ = self.entered(state, status == {1}, 1 in status), open_ and 1 in status
        return self.compound(st, runs, rest if open_ else None)

    def compound(self, st: State, runs: list[tuple[State, Flow]],
                 rest: State | None) -> tuple[State, Flow, Status]:
        after = self.branches(st, runs, rest)
        falls = any(f.falls for _, f in runs) or rest is not None
        return after, Flow(falls, frozenset[str]().union(*(f.leaves for _, f in runs))), _ANY

    def block_status(self, block: Block, st: State, ctx: _Ctx) -> tuple[tuple[State, Status], Flow]:
        """Walk a condition: its state after, and the statuses of its last list."""
        status: Status = frozenset({0})
        falls, leaves = True, frozenset[str]()
        for item in block:
            st, flow, status = self.and_or(item, st, ctx)
            falls, leaves = falls and flow.falls, leaves | flow.leaves
        return (st, status if falls else frozenset()), Flow(falls, leaves)

    @staticmethod
    def entered(st: State, every: bool, some: bool) -> State:
        out = st.copy(must=st.must and every, can=st.can and some)
        if st.since is not None:
            out.since = (st.since[0] and every, st.since[1] and some)
        return out

    def case(self, node: Case, st: State, ctx: _Ctx) -> tuple[State, Flow, Status]:
        subject = expand(node.subject.text, st.env).value
        runs: list[tuple[State, Flow]] = []
        open_ = clear = True  # some path matched no pattern so far / every path did
        for patterns, body in node.arms:
            verdicts = [case_matches(subject, expand(p.text, st.env, split=False).value) for p in patterns]
            sure, maybe = True in verdicts, any(v is not False for v in verdicts)
            out, flow = self.block(body, self.entered(st, sure and clear, maybe and open_), ctx)
            if maybe and open_:
                runs.append((out, flow))
            open_, clear = open_ and not sure, clear and not maybe
        return self.compound(st, runs, st if open_ else None)

    def loop(self, node: Loop, st: State, ctx: _Ctx) -> tuple[State, Flow, Status]:
        """The body may run again after itself: it is walked twice, the
        second time from what the first left (a start point inside it then
        reaches the statements before it on SOME paths); a variable still
        changing after that is unknown."""
        first_env = dict(st.env)
        state = st
        ends: list[dict[str, Value]] = [first_env]
        leaves = frozenset[str]()
        stops = falls = False  # the loop may end by its own test / its body may fall through
        for n in range(2):
            cond_state, every, some, cflow = self.loop_head(node, state, ctx)
            stops = stops or not every or node.keyword in ("for", "select")
            out, flow = self.block(node.body, self.entered(cond_state, every and n == 0, some), ctx)
            falls = falls or (flow.falls and some)
            leaves |= flow.leaves | cflow.leaves
            ends += [cond_state.env, out.env]
            state = cond_state.copy(must=False)
            state.env = _join_env([cond_state.env, out.env])
            state.since = _join_since(cond_state.since, out.since)
        env, before = _join_env(ends), _join_env(ends[:-2])
        for name, value in env.items():
            if value != before.get(name, value):
                env[name] = unknown_variable(name)
        # A `for` ends after its last run of the body, or without running it;
        # a `while` whose test always goes on, only by `break`.
        escapes = "break" in leaves or (stops and (node.keyword in ("while", "until") or falls or not every))
        leaves -= {"break"}
        after = State(env, st.cwd if not state.can else st.cwd | state.cwd, st.must and not leaves,
                      st.can and escapes, None)
        if st.since is not None:
            after.since = (st.since[0] and not leaves and escapes, st.since[1] and escapes)
        elif state.since is not None:
            after.since = (False, state.since[1])
        return after, Flow(escapes, leaves), _ANY

    def loop_head(self, node: Loop, st: State, ctx: _Ctx) -> tuple[State, bool, bool, Flow]:
        """The state entering the body, and whether the body runs on every
        path / on some."""
        if node.keyword in ("while", "until"):
            (state, status), flow = self.block_status(node.condition, st, ctx)
            go = 0 if node.keyword == "while" else 1
            return state, status == {go}, go in status, flow
        self.seen(node, st, ctx)
        if node.items is None:
            values = [unknown_variable("@")]
        else:
            values = [expand(w.text, st.env).value for w in node.items]
        state = st.copy()
        if node.var is not None:
            state.env[node.var.text] = joined(values)
        once = any(v.empty() is False for v in values)
        return state, once, bool(values), Flow()

    # --- simple commands ----------------------------------------------------

    def simple(self, node: Simple, st: State, ctx: _Ctx) -> tuple[State, Flow, Status]:
        for _, sub in node.subs:
            self.block(sub, st.copy(), replace(ctx, persists="no"))
        self.seen(node, st, ctx)
        env = st.env
        for word in [*node.args, *(r.target for r in node.redirects)]:
            if "=" in word.text and "${" in word.text:  # ${X:=default} assigns X
                env.update(expand(word.text, env).assigned)
        assigned: dict[str, Value] = {}
        for word in node.assignments:
            var, _, value = word.text.partition("=")
            x = expand(value, {**env, **assigned}, split=False)
            env.update(x.assigned)
            assigned[var] = x.value
        status: Status = frozenset({0}) if not any(i < len(node.assignments) for i, _ in node.subs) else _ANY
        if not node.args:
            env.update(assigned)
            return st, Flow(), status
        names = expand(node.args[0].text, env).value.strings
        name = next(iter(names)) if names is not None and len(names) == 1 else None
        if name is not None and name in self.functions and name not in {f.name for f in ctx.frames}:
            return self.call(name, node, assigned, st, ctx)
        if name in _SPECIAL_BUILTINS:
            env.update({k: lookup(env, k) | v for k, v in assigned.items()})
        return self.builtin(name, node, st, ctx)

    def builtin(self, name: str | None, node: Simple, st: State, ctx: _Ctx) -> tuple[State, Flow, Status]:
        env = st.env
        args = [w.text for w in node.args[1:]]
        leave = {"return": "return", "exit": "exit", "break": "break", "continue": "break"}.get(name or "")
        if leave is not None or (name == "exec" and args):
            if leave == "return" and st.can:
                ctx.frames[-1].returns.append(dict(env))
            reached = st.can
            st.must = st.can = False
            # a leave on no path is none: what follows is judged as if it were not there
            return st, Flow(False, frozenset({leave or "exit"}) if reached else frozenset()), _ANY
        if name in (":", "true"):
            return st, Flow(), frozenset({0})
        if name == "false":
            return st, Flow(), frozenset({1})
        if name in ("[", "test"):
            return st, Flow(), test_status([expand(a, env).value for a in args], name == "[")
        if name in _DECLARATIONS:
            self.declare(name, args, st, ctx)
        elif name == "unset" and "-f" not in args:
            env.update({a: EMPTY for a in args if a.isidentifier()})
        elif name in ("read", "getopts"):
            targets = _read_targets(args) if name == "read" else args[1:2]
            env.update({a: Value.unknown(f"the input of `{name}`") for a in targets})
        elif name == "cd":
            target = expand(args[-1], env).value if args and args[-1] != "-" else unknown_variable("HOME")
            st.cwd = absolute(target, st.cwd)
        elif name in ("pushd", "popd"):
            st.cwd = Value.unknown("the working directory")
        elif name in (".", "source", "eval"):
            env.clear()
        return st, Flow(), _ANY

    def declare(self, name: str, args: list[str], st: State, ctx: _Ctx) -> None:
        """local/declare/typeset make a variable the function's own; a
        `local X` without a value empties X in bash and keeps it in dash."""
        frame = ctx.frames[-1]
        function_scope = name in ("local", "declare", "typeset") and frame.name != ""
        for arg in args:
            if arg.startswith("-"):
                continue
            var, eq, value = arg.partition("=")
            if not var.isidentifier():
                continue
            if function_scope and var not in frame.locals:
                frame.locals[var] = st.env.get(var)
                if not eq:
                    st.env[var] = lookup(st.env, var) | EMPTY
            if eq:
                st.env[var] = expand(value, st.env, split=False).value

    def call(self, name: str, node: Simple, assigned: dict[str, Value], st: State,
             ctx: _Ctx) -> tuple[State, Flow, Status]:
        """A function of the file: each definition walked where it is called
        (several definitions: any of them)."""
        before = {k: st.env.get(k) for k in assigned}
        st.env.update(assigned)
        if name == self.record and st.can:
            self.entries.append(dict(st.env))
        defs = self.functions[name]
        runs = []
        for definition in defs:
            frame = _Frame(name)
            inner = replace(ctx, frames=(*ctx.frames, frame), calls=(*ctx.calls, Call(name, node.start)))
            entry = self.entered(st, len(defs) == 1, True)
            out, flow, _ = self.command(definition.body, entry, inner)
            ends = ([out.env] if flow.falls else []) + frame.returns
            out.env = _join_env(ends) if ends else out.env
            for var, old in frame.locals.items():
                if old is None:
                    out.env.pop(var, None)
                else:
                    out.env[var] = old
            returned = "return" in flow.leaves
            out.can = out.can or (returned and entry.can)
            runs.append((out, Flow(flow.falls or returned, flow.leaves & {"exit", "stop"})))
        after = self.branches(st, runs, None)
        # An assignment before a function call may or may not outlive it (POSIX leaves it open).
        after.env.update({k: (v if v is not None else unknown_variable(k)) | lookup(after.env, k)
                          for k, v in before.items()})
        falls = any(f.falls for _, f in runs)
        return after, Flow(falls, frozenset[str]().union(*(f.leaves for _, f in runs))), _ANY


def _read_targets(args: list[str]) -> list[str]:
    """The variables `read` assigns (REPLY without any)."""
    names, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a.startswith("-"):
            skip = a in ("-p", "-t", "-u", "-n", "-N", "-d", "-a", "-i")
        else:
            names.append(a)
    return names or ["REPLY"]


def test_status(args: list[Value], bracket: bool) -> Status:
    """The statuses `test`/`[` may end with, for the forms whose operands
    decide it: -n, -z, a lone string, =, !=, and `!` before them."""
    if bracket:
        if not args or args[-1].strings != frozenset({"]"}):
            return _ANY
        args = args[:-1]
    words = [a.strings for a in args]
    if len(args) >= 1 and words[0] == frozenset({"!"}):
        inner = test_status(args[1:], False)
        return frozenset(1 - s for s in inner)
    if len(args) == 1:
        empty = args[0].empty()
        return _ANY if empty is None else frozenset({1 if empty else 0})
    if len(args) == 2 and words[0] in (frozenset({"-n"}), frozenset({"-z"})):
        empty = args[1].empty()
        if empty is None:
            return _ANY
        return frozenset({0 if empty == (words[0] == frozenset({"-z"})) else 1})
    if len(args) == 3 and words[1] in (frozenset({"="}), frozenset({"=="}), frozenset({"!="})):
        equal = same(args[0], args[2])
        if equal is None:
            return _ANY
        return frozenset({0 if equal == (words[1] != frozenset({"!="})) else 1})
    return _ANY


def _join_env(envs: list[dict[str, Value]]) -> dict[str, Value]:
    """The variables after paths that ended in `envs` met: each may hold
    what it held on any of them."""
    if len(envs) == 1:
        return dict(envs[0])
    names = {n for e in envs for n in e}
    return {n: joined([lookup(e, n) for e in envs]) for n in names}


def _join_since(a: tuple[bool, bool] | None, b: tuple[bool, bool] | None) -> tuple[bool, bool] | None:
    if a is None or b is None:
        return a or b
    return (a[0] and b[0], a[1] or b[1])


def entry_env(script: Block, functions: dict[str, list[FunctionDef]], name: str) -> dict[str, Value]:
    """What the variables hold when the file's own lists call function
    `name`, directly or through other functions of the file: the top level
    is walked from its first line, every call followed, and the variables at
    each entry into `name` are joined (a variable set differently before
    two calls has both values). That is the shell's own order, with no
    approximation beyond the walk's (see the module's docstring): a
    variable the top level or a function on the way sets after the call, or
    only in the caller's caller after it, is not taken. A function the file
    never calls is called by whoever sources the file, after assignments of
    its own we cannot see: it starts with every variable unknown, which
    never claims a value the script did not set."""
    walker = Walker(functions, record=name)
    walker.run(script, {})
    return _join_env(walker.entries) if walker.entries else {}


def assigns(node: Simple) -> list[tuple[str, str | None]]:
    """(variable, value text or None without one) for each assignment the
    command makes in the shell itself: NAME=value before no command, or an
    argument of local/export/readonly/typeset/declare."""
    if not node.args:
        return [(w.text.split("=", 1)[0], w.text.split("=", 1)[1]) for w in node.assignments]
    if node.args[0].text not in _DECLARATIONS:
        return []
    out: list[tuple[str, str | None]] = []
    for w in node.args[1:]:
        if is_assignment(w.text):
            out.append((w.text.split("=", 1)[0], w.text.split("=", 1)[1]))
        elif w.text.isidentifier():
            out.append((w.text, None))
    return out


def where(text: str, path: str, start: int, calls: tuple[Call, ...], function: str) -> str:
    """`file:line `the line`` for a command, and the helper calls that led
    to it from `function`."""
    line, content = line_of(text, start)
    out = f"{path}:{line} `{content}`"
    if calls:
        names = [c.name for c in calls]
        by = "".join(f", called by {n}" for n in reversed(names[:-1]))
        out += f" (in {names[-1]}{by}, which {function} calls at line {line_of(text, calls[0].start)[0]})"
    return out


@dataclass
class Verdict:
    """What an edit found in one definition of its function: statements
    that provably undo it, and those it cannot judge."""

    refusals: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def overall(verdicts: list[Verdict], function: str) -> Verdict:
    """Several definitions of a function: the shell runs whichever was
    defined last before the call, so a refusal holds only when every
    definition has one; otherwise the refusals are notes."""
    if all(v.refusals for v in verdicts):
        return Verdict([verdicts[0].refusals[0]], [n for v in verdicts for n in v.notes])
    out = Verdict()
    for v in verdicts:
        for n in v.notes:
            out.note(n)
        for r in v.refusals:
            out.note(f"{r} (in one of {len(verdicts)} definitions of {function}, "
                     "maybe not the one in effect)")
    return out
