"""Which statements of a shell function run on every path, and which only on
some: enough control flow for an edit to tell whether the line it inserts
will run, and whether a later statement of the same function undoes it.

The script edits insert a line and then trust it; an insertion that lands in
one branch of an `if`, after a `return`, or before a command that overwrites
what it set does nothing at boot while `verify` still finds it in place.
Built on the tokens of shell.py: reserved words in command position open and
close the compound commands (`if`/`fi`, `case`/`esac`, loops, `{ }`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vsaimage.edits.shell import FunctionSpan, Token, in_command_position

FrameKind = Literal["if", "case", "loop", "group"]

_OPENERS: dict[str, FrameKind] = {
    "if": "if", "case": "case", "while": "loop", "until": "loop", "for": "loop", "select": "loop",
    "{": "group",
}  # fmt: skip
_CLOSERS: dict[str, FrameKind] = {"fi": "if", "esac": "case", "done": "loop", "}": "group"}
# After these a command starts a new statement, so an `&&`/`||` before them
# no longer guards it.
_SEPARATORS = frozenset({"\n", ";", ";;", "&"})


@dataclass(frozen=True)
class Frame:
    """A compound command enclosing a token: its kind, where it opens (token
    index), which branch the token is in (if: then/elif.../else counted from
    0; case: the pattern clause), and whether an `&&`/`||` guards the whole
    command (`[ -x x ] && { ...; }`)."""

    kind: FrameKind
    open: int
    branch: int = 0
    guarded: bool = False


@dataclass(frozen=True)
class Place:
    """Where a token sits: the compound commands around it, innermost last,
    and whether an `&&`/`||` earlier in its own statement guards it."""

    frames: tuple[Frame, ...]
    guarded: bool

    @property
    def conditional(self) -> bool:
        """It may not run although the function's body does."""
        return self.guarded or any(f.kind != "group" or f.guarded for f in self.frames)

    def within(self, other: Place) -> bool:
        """Whether every path through `other`'s position continues to this
        one: the same frames in the same branches, or fewer (it is outside
        them), and nothing guarding it on its own."""
        n = len(self.frames)
        return not self.guarded and n <= len(other.frames) and self.frames == other.frames[:n]


def places(span: FunctionSpan) -> dict[int, Place]:
    """The Place of every token of the function body, by token index."""
    tokens = span.tokens
    stack: list[Frame] = []
    guarded = False
    out: dict[int, Place] = {}
    for k in range(span.first, span.last):
        tok = tokens[k]
        out[k] = Place(tuple(stack), guarded)
        if tok.kind != "word":
            if tok.text in ("&&", "||"):
                guarded = True
            elif tok.text in _SEPARATORS and (tok.kind != "newline" or not _continues(tokens, k)):
                guarded = False
            if tok.text == ";;" and stack and stack[-1].kind == "case":
                stack[-1] = _next_branch(stack[-1])
            continue
        if not in_command_position(tokens, k):
            continue
        word = tok.text
        if word in _OPENERS:
            stack.append(Frame(_OPENERS[word], k, 0, guarded))
            guarded = False
        elif word in ("elif", "else") and stack and stack[-1].kind == "if":
            stack[-1] = _next_branch(stack[-1])
            guarded = False
        elif word in ("then", "do"):
            guarded = False
        elif word in _CLOSERS and stack and stack[-1].kind == _CLOSERS[word]:
            stack.pop()
    return out


def _next_branch(frame: Frame) -> Frame:
    return Frame(frame.kind, frame.open, frame.branch + 1, frame.guarded)


def _continues(tokens: list[Token], k: int) -> bool:
    """A newline after `|`, `&&` or `||` continues the statement."""
    return k > 0 and tokens[k - 1].text in ("|", "&&", "||")


def branch_count(span: FunctionSpan, frame: Frame) -> tuple[int, bool]:
    """(branches of the `if` opening at frame.open, whether one is `else`)."""
    tokens = span.tokens
    level, branches, has_else = 0, 1, False
    for k in range(frame.open + 1, span.last):
        tok = tokens[k]
        if tok.kind != "word" or not in_command_position(tokens, k):
            continue
        if tok.text == "if":
            level += 1
        elif tok.text == "fi":
            if level == 0:
                break
            level -= 1
        elif level == 0 and tok.text in ("elif", "else"):
            branches += 1
            has_else = has_else or tok.text == "else"
    return branches, has_else


def line_of(text: str, pos: int) -> tuple[int, str]:
    """(1-based line number, the line's content without its blanks) at `pos`."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text.count("\n", 0, pos) + 1, text[start : len(text) if end < 0 else end].strip()


def command_words(span: FunctionSpan, k: int) -> list[Token]:
    """The words of the simple command starting at token k (up to the next
    operator or newline)."""
    words = []
    for tok in span.tokens[k : span.last]:
        if tok.kind != "word":
            break
        words.append(tok)
    return words
