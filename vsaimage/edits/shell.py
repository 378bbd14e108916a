"""Just enough of a POSIX shell lexer to find a function and the statements in
its body without being fooled by comments, quotes, `${...}`, command
substitutions or here-documents.

The LeftHand init scripts are plain sh, but they are not ours: a regex on lines
would happily patch a commented-out copy of a function or a string that looks
like one. Tokens carry their offsets so edits can insert text at exact places
and leave every other byte alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vsaimage.errors import EditError

TokenKind = Literal["word", "op", "newline"]

# After these a word is in command position, where `{`, `}` and a function
# name are reserved words / definitions rather than arguments.
_CMD_OPS = frozenset({"\n", ";", ";;", "&", "&&", "||", "|", "(", ")"})
_CMD_WORDS = frozenset({"{", "}", "then", "do", "else", "elif", "if", "while", "until", "!"})


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str
    start: int
    end: int
    depth: int  # 0 at script level; +1 inside ( ) and $( )


class _Lexer:
    def __init__(self, text: str) -> None:
        self.s = text
        self.out: list[Token] = []
        self.heredocs: list[tuple[str, bool]] = []  # (delimiter, strip tabs)

    def emit(self, kind: TokenKind, start: int, end: int, depth: int) -> None:
        self.out.append(Token(kind, self.s[start:end], start, end, depth))

    def code(self, i: int, depth: int, closer: str | None, emit_closer: bool = False) -> int:
        s, n = self.s, len(self.s)
        word = -1  # start of the word being read, -1 when between words
        heredoc_next = False  # the next word is a here-document delimiter

        def flush(end: int) -> None:
            nonlocal word, heredoc_next
            if word >= 0:
                self.emit("word", word, end, depth)
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
                self.emit("newline", i, i + 1, depth)
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
                i = self.double(i + 1, depth)
            elif c == "`":
                word = i if word < 0 else word
                i = self.backtick(i + 1)
            elif c == "$" and s.startswith("{", i + 1):
                word = i if word < 0 else word
                i = self.param(i + 2, depth)
            elif c == "$" and s.startswith("(", i + 1):
                word = i if word < 0 else word
                i = self.code(i + 2, depth + 1, ")")
            elif c == ")" and closer == ")":
                flush(i)
                if emit_closer:
                    self.emit("op", i, i + 1, depth - 1)
                return i + 1
            elif c in ";&|()<>":
                flush(i)
                end = i + 1
                if c in ";&|<>" and s.startswith(c, end):
                    end += 1  # ;; && || << >>
                if s[i:end] == "<<":
                    strip = s.startswith("-", end)
                    end += 1 if strip else 0
                    self.heredocs.append(("", strip))
                    heredoc_next = True
                self.emit("op", i, end, depth)
                i = self.code(end, depth + 1, ")", emit_closer=True) if c == "(" else end
            else:
                word = i if word < 0 else word
                i += 1
        flush(n)
        return n

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

    def double(self, i: int, depth: int) -> int:
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
                i = self.code(i + 2, depth + 1, ")")
            elif s.startswith("${", i):
                i = self.param(i + 2, depth)
            else:
                i += 1
        return len(s)

    def backtick(self, i: int) -> int:
        s = self.s
        while i < len(s):
            if s[i] == "\\":
                i += 2
            elif s[i] == "`":
                return i + 1
            else:
                i += 1
        return len(s)

    def param(self, i: int, depth: int) -> int:
        s = self.s
        while i < len(s):
            c = s[i]
            if c == "\\":
                i += 2
            elif c == "}":
                return i + 1
            elif c == '"':
                i = self.double(i + 1, depth)
            elif c == "'":
                end = s.find("'", i + 1)
                i = len(s) if end < 0 else end + 1
            elif s.startswith("${", i):
                i = self.param(i + 2, depth)
            elif s.startswith("$(", i):
                i = self.code(i + 2, depth + 1, ")")
            else:
                i += 1
        return len(s)


def _unquote(word: str) -> str:
    return word.replace('"', "").replace("'", "").replace("\\", "")


def tokenize(text: str) -> list[Token]:
    """Words, operators and newlines of `text` in order of position; nothing
    from comments, quoted strings or here-document bodies is a token of its own."""
    lexer = _Lexer(text)
    lexer.code(0, 0, None)
    return sorted(lexer.out, key=lambda t: t.start)


def top_level(text: str) -> list[Token]:
    """The script-level tokens (outside any ( ), $( ) or quotes)."""
    return [t for t in tokenize(text) if t.depth == 0]


def in_command_position(tokens: list[Token], index: int) -> bool:
    if index == 0:
        return True
    prev = tokens[index - 1]
    return prev.text in _CMD_OPS if prev.kind != "word" else prev.text in _CMD_WORDS


@dataclass(frozen=True)
class FunctionSpan:
    """Where a function sits: `open` is the `{` token, `close` the matching
    `}`; `first`/`last` index the tokens of the body in `tokens`."""

    tokens: list[Token]
    open: Token
    close: Token
    first: int
    last: int

    def body(self) -> list[Token]:
        return self.tokens[self.first : self.last]


def find_function(text: str, name: str, path: str) -> FunctionSpan:
    """The one definition of function `name` in `text` (`f()`, `f ()`,
    `function f`, `function f()`; brace on the same or the next line).
    EditError naming `path` when it is absent, defined twice or not a { } body."""
    tokens = top_level(text)
    found: list[FunctionSpan] = []
    for i, tok in enumerate(tokens):
        if tok.kind != "word" or not in_command_position(tokens, i):
            continue
        j = _after_header(tokens, i, name)
        if j is None:
            continue
        while j < len(tokens) and tokens[j].kind == "newline":
            j += 1
        if j >= len(tokens) or tokens[j].text != "{":
            raise EditError(f"{path}: function {name} has no {{ }} body we can edit")
        found.append(_match_brace(tokens, j, name, path))
    if not found:
        raise EditError(f"{path}: function {name} not found")
    if len(found) > 1:
        raise EditError(f"{path}: function {name} is defined {len(found)} times")
    return found[0]


def _after_header(tokens: list[Token], i: int, name: str) -> int | None:
    """Index just past a function header starting at tokens[i], or None."""

    def text_at(k: int) -> str | None:
        return tokens[k].text if k < len(tokens) else None

    if tokens[i].text == "function" and text_at(i + 1) == name:
        k = i + 2
        if text_at(k) == "(" and text_at(k + 1) == ")":
            k += 2
        return k
    if tokens[i].text == name and text_at(i + 1) == "(" and text_at(i + 2) == ")":
        return i + 3
    return None


def _match_brace(tokens: list[Token], open_index: int, name: str, path: str) -> FunctionSpan:
    level = 1  # the opening brace follows the header, not a command separator
    for k in range(open_index + 1, len(tokens)):
        tok = tokens[k]
        if tok.kind != "word" or not in_command_position(tokens, k):
            continue
        if tok.text == "{":
            level += 1
        elif tok.text == "}":
            level -= 1
            if level == 0:
                return FunctionSpan(tokens, tokens[open_index], tok, open_index + 1, k)
    raise EditError(f"{path}: function {name} has no closing brace")


def statement_end(tokens: list[Token], index: int) -> Token | None:
    """The newline ending the statement that holds tokens[index] (a newline
    after `|`, `&&` or `||` continues the statement)."""
    for k in range(index + 1, len(tokens)):
        tok = tokens[k]
        if tok.kind == "newline" and tokens[k - 1].text not in ("|", "&&", "||"):
            return tok
    return None
