"""Just enough of a POSIX shell lexer to read the LeftHand init scripts
without being fooled by comments, quotes, `${...}`, command substitutions or
here-documents.

The LeftHand init scripts are plain sh, but they are not ours: a regex on lines
would happily patch a commented-out copy of a function or a string that looks
like one. Tokens carry their offsets so edits can insert text at exact places
and leave every other byte alone. The text of a command substitution is part
of the word holding it; where it starts and ends is recorded so that
shelltree.py can read it as a script of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TokenKind = Literal["word", "op", "newline"]

# Operators made of two characters or more, longest first: `2>&1`, `>|`,
# bash's `&>` and here-strings must not read as `>` then `&`, `|` or `<<`.
_LONG_OPS = ("<<<", "&>>", "<<-", ";;", "&&", "||", "<<", ">>", ">&", "<&", ">|", "<>", "&>")


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Lexed:
    """The tokens of a text, and the command substitutions inside its words
    as (start, end) of the text between `$(` and `)` or between backticks
    (only the outermost ones: each is lexed again on its own)."""

    tokens: list[Token]
    substitutions: list[tuple[int, int]]


class _Lexer:
    def __init__(self, text: str) -> None:
        self.s = text
        self.out: list[Token] = []
        self.subs: list[tuple[int, int]] = []
        self.heredocs: list[tuple[str, bool]] = []  # (delimiter, strip tabs)
        self.silent = 0  # > 0 inside a command substitution: its tokens are not ours

    def emit(self, kind: TokenKind, start: int, end: int) -> None:
        if not self.silent:
            self.out.append(Token(kind, self.s[start:end], start, end))

    def substitution(self, start: int, end: int) -> None:
        if not self.silent:
            self.subs.append((start, end))

    def code(self, i: int, closer: str | None) -> int:
        """Lex from `i` up to `closer` (`)` ending a subshell or a `$(`);
        returns the offset after it."""
        s, n = self.s, len(self.s)
        word = -1  # start of the word being read, -1 when between words
        heredoc_next = False  # the next word is a here-document delimiter

        def flush(end: int) -> None:
            nonlocal word, heredoc_next
            if word >= 0:
                self.emit("word", word, end)
                if heredoc_next:
                    self.heredocs[-1] = (_unquote(s[word:end]), self.heredocs[-1][1])
                    heredoc_next = False
                word = -1

        while i < n:
            c = s[i]
            if c == "\\":
                if s.startswith("\n", i + 1) or s.startswith("\r\n", i + 1):
                    flush(i)  # line continuation
                    i += 2 if s[i + 1] == "\n" else 3
                    continue
                word = i if word < 0 else word
                i += 2
            elif c == "\n":
                flush(i)
                self.emit("newline", i, i + 1)
                i = self.skip_heredocs(i + 1)
            elif c in " \t\r":
                flush(i)
                i += 1
            elif c == "#" and word < 0:
                end = s.find("\n", i)
                i = n if end < 0 else end
            elif c == "'":
                word = i if word < 0 else word
                end = s.find("'", i + 1)
                i = n if end < 0 else end + 1
            elif c == '"':
                word = i if word < 0 else word
                i = self.double(i + 1)
            elif c == "`":
                word = i if word < 0 else word
                i = self.backtick(i + 1)
            elif c == "$" and s.startswith("{", i + 1):
                word = i if word < 0 else word
                i = self.param(i + 2)
            elif c == "$" and s.startswith("(", i + 1):
                word = i if word < 0 else word
                i = self.command_substitution(i + 2)
            elif c == ")" and closer == ")":
                flush(i)
                self.emit("op", i, i + 1)
                return i + 1
            elif c in ";&|()<>":
                flush(i)
                op = next((o for o in _LONG_OPS if s.startswith(o, i)), c)
                if op in ("<<", "<<-"):
                    self.heredocs.append(("", op == "<<-"))
                    heredoc_next = True
                self.emit("op", i, i + len(op))
                i = self.code(i + 1, ")") if op == "(" else i + len(op)
            else:
                word = i if word < 0 else word
                i += 1
        flush(n)
        return n

    def command_substitution(self, i: int) -> int:
        self.silent += 1
        end = self.code(i, ")")
        self.silent -= 1
        self.substitution(i, end - 1)
        return end

    def skip_heredocs(self, i: int) -> int:
        """Skip the bodies of here-documents opened on the line just ended."""
        s = self.s
        for delim, strip in self.heredocs:
            while i < len(s):
                end = s.find("\n", i)
                end = len(s) if end < 0 else end
                line = s[i:end].rstrip("\r")
                i = end + 1
                if (line.lstrip("\t") if strip else line) == delim:
                    break
        self.heredocs.clear()
        return min(i, len(s))

    def double(self, i: int) -> int:
        s = self.s
        while i < len(s):
            c = s[i]
            if c == "\\":
                i += 2
            elif c == '"':
                return i + 1
            elif c == "`":
                i = self.backtick(i + 1)
            elif s.startswith("$(", i):
                i = self.command_substitution(i + 2)
            elif s.startswith("${", i):
                i = self.param(i + 2)
            else:
                i += 1
        return len(s)

    def backtick(self, i: int) -> int:
        s, start = self.s, i
        while i < len(s):
            if s[i] == "\\":
                i += 2
            elif s[i] == "`":
                self.substitution(start, i)
                return i + 1
            else:
                i += 1
        self.substitution(start, len(s))
        return len(s)

    def param(self, i: int) -> int:
        s = self.s
        while i < len(s):
            c = s[i]
            if c == "\\":
                i += 2
            elif c == "}":
                return i + 1
            elif c == '"':
                i = self.double(i + 1)
            elif c == "'":
                end = s.find("'", i + 1)
                i = len(s) if end < 0 else end + 1
            elif s.startswith("${", i):
                i = self.param(i + 2)
            elif s.startswith("$(", i):
                i = self.command_substitution(i + 2)
            elif c == "`":
                i = self.backtick(i + 1)
            else:
                i += 1
        return len(s)


def _unquote(word: str) -> str:
    return word.replace('"', "").replace("'", "").replace("\\", "")


def lex(text: str, start: int = 0, end: int | None = None) -> Lexed:
    """Words, operators and newlines of text[start:end] in order of position
    (offsets into `text`); nothing from comments, quoted strings, command
    substitutions or here-document bodies is a token of its own."""
    stop = len(text) if end is None else end
    lexer = _Lexer(text[:stop])
    lexer.code(start, None)
    return Lexed(sorted(lexer.out, key=lambda t: t.start), sorted(lexer.subs))


def closing(text: str, i: int) -> int:
    """The offset just past the quoted string or expansion that starts at
    text[i] (`'`, `"`, a backtick, `${` or `$(`), as the lexer reads it."""
    lexer = _Lexer(text)
    lexer.silent = 1
    if text.startswith("${", i):
        return lexer.param(i + 2)
    if text.startswith("$(", i):
        return lexer.command_substitution(i + 2)
    if text[i] == '"':
        return lexer.double(i + 1)
    if text[i] == "`":
        return lexer.backtick(i + 1)
    end = text.find("'", i + 1)
    return len(text) if end < 0 else end + 1
