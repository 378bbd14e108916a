"""What a shell word stands for when it runs, as far as the script itself
says: the values its variables may hold, and paths compared as paths.

A value is a set of possible strings; a part the script does not settle (a
variable it never assigns, a command substitution, a positional parameter)
is a `Hole` that names it, so that a report can say which variable could not
be resolved. Each possible string is kept as a pattern of literal text and
holes: `$LHN_RUN/platform.xml` with LHN_RUN unknown still ends with
`/platform.xml`, which is enough to tell it from `$LHN_RUN/brand`. No value
is ever guessed: where the script does not settle it, it stays a hole.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from vsaimage.edits.shell import closing

# More possible strings than this (a variable built up in a loop, say) and
# the value is given up as unknown: a report names it instead of listing them.
MAX_PATTERNS = 16
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL = frozenset("0123456789@*#?$!-")
_IFS = frozenset(" \t\n")
_GLOB = frozenset("*?[")
_SPECIAL_CHARS = frozenset("$`'\"\\~")


@dataclass(frozen=True)
class Hole:
    """A part of a value the script does not settle. `nonempty`: it is known
    not to be the empty string (a value vsaimage's own fallback set)."""

    name: str
    nonempty: bool = False


Part = str | Hole
Pattern = tuple[Part, ...]


def _pattern(parts: Iterable[Part]) -> Pattern:
    """Adjacent literals merged, empty ones dropped: one spelling per string."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, str):
            if not part:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += part
                continue
        out.append(part)
    return tuple(out)


@dataclass(frozen=True)
class Value:
    patterns: frozenset[Pattern] = field(default_factory=lambda: frozenset({()}))

    @classmethod
    def text(cls, s: str) -> Value:
        return cls(frozenset({_pattern([s])}))

    @classmethod
    def unknown(cls, name: str, nonempty: bool = False) -> Value:
        return cls(frozenset({(Hole(name, nonempty),)}))

    def __or__(self, other: Value) -> Value:
        return _capped(self.patterns | other.patterns)

    def __add__(self, other: Value) -> Value:
        pairs = itertools.product(self.patterns, other.patterns)
        return _capped(frozenset(_pattern([*a, *b]) for a, b in pairs))

    @property
    def strings(self) -> frozenset[str] | None:
        """Every possible string, when the script settles them all."""
        if any(isinstance(part, Hole) for p in self.patterns for part in p):
            return None
        return frozenset("".join(p) for p in self.patterns)  # type: ignore[arg-type]

    @property
    def holes(self) -> tuple[Hole, ...]:
        seen: dict[Hole, None] = {}
        for p in sorted(self.patterns, key=repr):
            seen.update((part, None) for part in p if isinstance(part, Hole))
        return tuple(seen)

    def empty(self) -> bool | None:
        """True when it is the empty string on every path, False when it is
        never empty, None when that depends."""
        states = {_empty(p) for p in self.patterns}
        return states.pop() if len(states) == 1 else None

    def has(self, hole: Hole) -> bool:
        return any(hole in p for p in self.patterns)


def _empty(p: Pattern) -> bool | None:
    if not p:
        return True
    if any(isinstance(part, str) or part.nonempty for part in p):
        return False
    return None


def _capped(patterns: frozenset[Pattern]) -> Value:
    if len(patterns) <= MAX_PATTERNS:
        return Value(patterns)
    return Value.unknown("a value with too many possibilities")


EMPTY = Value.text("")


def joined(values: Iterable[Value]) -> Value:
    """The value that may be any of `values`."""
    out: Value | None = None
    for v in values:
        out = v if out is None else out | v
    return EMPTY if out is None else out


Env = Mapping[str, Value]


def unknown_variable(name: str) -> Value:
    return Value.unknown(f"`${name}`")


def lookup(env: Env, name: str) -> Value:
    """A variable's value; one the script has not assigned is a hole."""
    return env.get(name) or unknown_variable(name)


@dataclass
class Expansion:
    """A word's value, and the variables `${X:=...}` assigned on the way."""

    value: Value
    assigned: dict[str, Value]


def expand(word: str, env: Env, *, split: bool = True, glob: bool = False) -> Expansion:
    """The value of a word as the shell expands it: quotes removed,
    parameters substituted (with their `:-`, `:=`, `:+` forms), command
    substitutions a hole. `split`: an unquoted expansion that would be split
    into several words is a hole (assignments do not split). `glob`: unquoted
    `*`, `?`, `[` are holes too (a path argument matches files)."""
    if not _SPECIAL_CHARS.intersection(word) and not (glob and _GLOB.intersection(word)):
        return Expansion(Value.text(word), {})  # a plain word: most are
    x = _Expander(env, split, glob)
    value = x.parts(word, 0, len(word), quoted=False, tilde=True)
    return Expansion(value, x.assigned)


@dataclass
class _Expander:
    env: Env
    split: bool
    glob: bool
    assigned: dict[str, Value] = field(default_factory=dict)

    def lookup(self, name: str) -> Value:
        return self.assigned.get(name) or lookup(self.env, name)

    def parts(self, s: str, i: int, end: int, *, quoted: bool, tilde: bool = False) -> Value:
        out = EMPTY
        literal: list[str] = []

        def add(value: Value) -> None:
            nonlocal out
            if literal:
                out = out + Value.text("".join(literal))
                literal.clear()
            if value != EMPTY:
                out = out + value

        if tilde and not quoted and s.startswith("~", i):
            add(Value.unknown("`~`"))
            i = _name_end(s, i + 1, end)
        while i < end:
            c = s[i]
            if c == "\\":
                nxt = s[i + 1 : i + 2]
                if nxt == "\n":
                    pass
                elif not quoted or nxt in '$`"\\':
                    literal.append(nxt)
                else:
                    literal.append(c + nxt)
                i += 2
            elif c == "'" and not quoted:
                stop = closing(s, i)
                literal.append(s[i + 1 : stop - 1])
                i = stop
            elif c == '"' and not quoted:
                stop = closing(s, i)
                add(self.parts(s, i + 1, stop - 1, quoted=True))
                i = stop
            elif c == "`" or s.startswith("$(", i):
                stop = closing(s, i)
                inner = s[i + 1 : stop - 1] if c == "`" else s[i + 2 : stop - 1]
                add(Value.unknown(f"the output of `{_short(inner.strip())}`"))
                i = stop
            elif s.startswith("${", i):
                stop = closing(s, i)
                add(self.unsplit(self.param(s, i + 2, stop - 1, quoted), quoted))
                i = stop
            elif c == "$" and i + 1 < end and (m := _NAME.match(s, i + 1, end)):
                add(self.unsplit(self.lookup(m.group()), quoted))
                i = m.end()
            elif c == "$" and i + 1 < end and s[i + 1] in _SPECIAL:
                add(Value.unknown(f"`{s[i : i + 2]}`"))
                i += 2
            elif c in _GLOB and self.glob and not quoted and (c != "[" or "]" in s[i:end]):
                add(Value.unknown(f"the files `{c}` matches"))
                i = s.find("]", i, end) + 1 if c == "[" else i + 1
            else:
                literal.append(c)
                i += 1
        add(EMPTY)
        return out

    def unsplit(self, value: Value, quoted: bool) -> Value:
        """An unquoted expansion the shell would split into several words:
        not one word we can name."""
        strings = value.strings
        if quoted or not self.split or strings is None or not any(_IFS & set(x) for x in strings):
            return value
        return Value.unknown("a value split into several words")

    def param(self, s: str, i: int, end: int, quoted: bool) -> Value:
        """${...} between i and end."""
        m = _NAME.match(s, i, end)
        if m is None:
            return Value.unknown(f"`{_short('${' + s[i:end] + '}')}`")
        name, rest = m.group(), m.end()
        op = next((o for o in (":-", ":=", ":+", ":?", "-", "=", "+", "?") if s.startswith(o, rest)), None)
        if rest == end:
            return self.lookup(name)
        if op is None:  # ${X%...}, ${X#...}, ${X:1}, ${X/...}: not followed
            return Value.unknown(f"`{_short('${' + s[i:end] + '}')}`")
        word = self.parts(s, rest + len(op), end, quoted=quoted)
        current = self.lookup(name)
        result = joined(_param_op(Value(frozenset({p})), op.lstrip(":"), word) for p in current.patterns)
        if op.endswith("="):
            self.assigned[name] = result
        return result


def _param_op(value: Value, op: str, word: Value) -> Value:
    """One possible value of ${X<op>word}. Unset and empty are not told
    apart: both are taken as possible wherever either is."""
    empty = value.empty()
    if op in ("-", "="):
        return word if empty else value if empty is False else value | word
    if op == "+":
        return EMPTY if empty else word if empty is False else EMPTY | word
    return value  # ?: the value, or the shell stops there


def _name_end(s: str, i: int, end: int) -> int:
    while i < end and s[i] not in "/:":
        i += 1
    return i


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def reads(word: str, name: str) -> bool:
    """Whether expanding `word` reads variable `name` (in a command
    substitution too)."""
    return re.search(rf"\$(?:\{{[#!]?)?{re.escape(name)}(?![A-Za-z0-9_])", word) is not None


# --- paths ----------------------------------------------------------------


def normalize(path: str) -> str:
    """A path as the kernel reads it, `..` aside: `//` and `/./` are one
    `/`, a trailing `/` and a leading `./` go."""
    absolute = path.startswith("/")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    out = "/".join(parts)
    return ("/" + out) if absolute else (out or ".")


def absolute(value: Value, cwd: Value) -> Value:
    """Each possible path made absolute against the working directory."""
    out: list[Value] = []
    for p in value.patterns:
        v = Value(frozenset({p}))
        # a hole first may hold an absolute path: not made relative to anything
        relative = not p or (isinstance(p[0], str) and not p[0].startswith("/"))
        out.append(cwd + Value.text("/") + v if relative else v)
    return joined(out)


def basename(value: Value) -> Value:
    """The last component of each possible path (a hole where it ends in one)."""
    out: list[Value] = []
    for p in value.patterns:
        tail = p[-1] if p else ""
        if isinstance(tail, str) and "/" in tail.rstrip("/"):
            out.append(Value.text(tail.rstrip("/").rsplit("/", 1)[-1]))
        elif all(isinstance(part, str) for part in p):
            out.append(Value.text("".join(p).rstrip("/").rsplit("/", 1)[-1]))  # type: ignore[arg-type]
        else:
            out.append(Value(frozenset({p})) if len(p) == 1 else Value.unknown(_hole_names(p)))
    return joined(out)


def _hole_names(p: Pattern) -> str:
    return ", ".join(part.name for part in p if isinstance(part, Hole))


@dataclass(frozen=True)
class PathMatch:
    """Whether a value names a path: `sure` (every possible value is that
    path), `maybe` (some may be), else neither. `why` says what kept it
    from being sure: the holes, or the other values it may take."""

    sure: bool
    maybe: bool
    why: str = ""


def names_path(value: Value, path: str) -> PathMatch:
    """Compare every possible (absolute) value with `path` as paths."""
    verdicts = [_pattern_names(p, path) for p in value.patterns]
    if all(v is True for v in verdicts):
        return PathMatch(True, True)
    if not any(v is not False for v in verdicts):
        return PathMatch(False, False)
    holes = [part.name for p, v in zip(value.patterns, verdicts, strict=True) if v is None
             for part in p if isinstance(part, Hole)]
    if holes:
        why = "could not resolve " + ", ".join(dict.fromkeys(holes))
    elif any(v is None for v in verdicts):
        why = "it goes through `..`"
    else:
        why = "it names that path on some paths only"
    return PathMatch(False, True, why)


def _pattern_names(p: Pattern, path: str) -> bool | None:
    """True: it is `path`; False: it cannot be; None: it may be."""
    name = path.rsplit("/", 1)[-1]
    if all(isinstance(part, str) for part in p):
        text = normalize("".join(p))  # type: ignore[arg-type]
        if ".." not in text.split("/"):
            return text == normalize(path)
        return None if text.rsplit("/", 1)[-1] == name else False
    # A hole may hold any text, `/..` included: only the last component the
    # literal tail spells out can rule the path out.
    tail = p[-1] if isinstance(p[-1], str) else ""
    tail = normalize(tail) if "/" in tail.rstrip("/") else tail.rstrip("/")
    if "/" in tail:
        last = tail.rsplit("/", 1)[-1]
        return None if last in ("", ".", "..", name) else False
    return None if name.endswith(tail) else False


def case_matches(subject: Value, pattern: Value) -> bool | None:
    """Whether a `case` subject matches one pattern word: True/False when
    both are settled, None when that depends."""
    subjects, patterns = subject.strings, pattern.strings
    if patterns == frozenset({"*"}):
        return True  # whatever the subject
    if subjects is None or patterns is None:
        return None
    results = {fnmatch.fnmatchcase(s, p) for s in subjects for p in patterns}
    return results.pop() if len(results) == 1 else None


def same(a: Value, b: Value) -> bool | None:
    """Whether two values are equal strings: True/False when settled."""
    sa, sb = a.strings, b.strings
    if sa is None or sb is None:
        return None
    results = {x == y for x in sa for y in sb}
    return results.pop() if len(results) == 1 else None
