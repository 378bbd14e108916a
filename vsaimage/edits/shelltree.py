"""The statements of a shell script as a tree: lists, pipelines, simple
commands, `if`, `case`, loops, `{ }` and `( )` groups and function
definitions, each with the tokens it was read from.

The script edits need more than the tokens of shell.py: whether a statement
runs on every path, what a variable holds when it runs, what a helper it
calls does (shellflow.py, shellvars.py). The reader is tolerant, as the
scripts are not ours: a closing word without its opener is read as a word,
and a construct the end of the text cuts short is closed there (`closed`
says so), so one odd line elsewhere never keeps an edit from its function.
Not read: a `case` inside `( )` or `$( )` (its `)` ends the group, as in
many old shells), arithmetic `(( ))` beyond its words.

Longer than 400 lines on purpose: the node types and the one recursive
parser that builds them belong together; split, each half would need the
other's grammar.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

from vsaimage.edits.shell import Lexed, Token, lex
from vsaimage.errors import EditError

REDIRECTS = frozenset({"<", ">", ">>", ">|", "<>", "<<", "<<-", "<<<", ">&", "<&", "&>", "&>>"})
# Reserved words that end a list; each is a word only where no list ends.
_CLOSERS = frozenset({"then", "elif", "else", "fi", "do", "done", "esac", "}"})
_SEPARATORS = frozenset({";", "&", "\n"})


@dataclass(frozen=True)
class Redirect:
    op: str
    target: Token  # a file, a file descriptor (`>&2`) or a here-document's delimiter


@dataclass(frozen=True)
class Simple:
    """A simple command: its words (variable assignments first), its
    redirections, and the command substitutions of its words, read as
    scripts of their own (`subs`: (index of the word, script); index
    len(words) and up: the redirections' targets)."""

    words: tuple[Token, ...]
    redirects: tuple[Redirect, ...]
    subs: tuple[tuple[int, Block], ...]
    start: int
    end: int

    @property
    def assignments(self) -> tuple[Token, ...]:
        return self.words[: self._command_index()]

    @property
    def args(self) -> tuple[Token, ...]:
        """The command name and its arguments."""
        return self.words[self._command_index() :]

    def _command_index(self) -> int:
        k = 0
        while k < len(self.words) and is_assignment(self.words[k].text):
            k += 1
        return k


@dataclass(frozen=True)
class If:
    conditions: tuple[Block, ...]  # `if`, then each `elif`
    bodies: tuple[Block, ...]  # one per condition, then the `else` body if any
    has_else: bool
    redirects: tuple[Redirect, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Case:
    subject: Token
    arms: tuple[tuple[tuple[Token, ...], Block], ...]  # (patterns, body)
    redirects: tuple[Redirect, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Loop:
    keyword: str  # while | until | for | select
    var: Token | None  # for/select
    items: tuple[Token, ...] | None  # for/select: the words after `in`; None: "$@"
    condition: Block  # while/until
    body: Block
    redirects: tuple[Redirect, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Group:
    """`{ ...; }`, or `( ... )` (subshell) when `open` is `(`."""

    body: Block
    open: Token
    close: Token | None  # None: the text ends first
    redirects: tuple[Redirect, ...]
    start: int
    end: int

    @property
    def subshell(self) -> bool:
        return self.open.text == "("


@dataclass(frozen=True)
class FunctionDef:
    name: Token
    body: Command
    start: int
    end: int


Command = Simple | If | Case | Loop | Group | FunctionDef


@dataclass(frozen=True)
class Pipeline:
    commands: tuple[Command, ...]
    negated: bool


@dataclass(frozen=True)
class AndOr:
    """Pipelines joined by `&&`/`||` (`ops[i]` between pipelines i and i+1),
    ended by `terminator` (`;`, `&`, a newline, `;;`, or None where a closing
    word or the end of the text ends it)."""

    pipelines: tuple[Pipeline, ...]
    ops: tuple[str, ...]
    terminator: Token | None
    start: int
    end: int  # after its last token, before the terminator

    @property
    def background(self) -> bool:
        return self.terminator is not None and self.terminator.text == "&"


Block = tuple[AndOr, ...]


def is_assignment(word: str) -> bool:
    """NAME=... (what the shell takes for a variable assignment)."""
    name, eq, _ = word.partition("=")
    return bool(eq) and name.isidentifier() and name.isascii()


@dataclass
class _Parser:
    text: str
    lexed: Lexed
    i: int = 0
    toks: list[Token] = field(init=False)

    def __post_init__(self) -> None:
        self.toks = self.lexed.tokens

    def peek(self, k: int = 0) -> Token | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self) -> Token:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at_word(self, *texts: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "word" and tok.text in texts

    def at_op(self, *texts: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind != "word" and tok.text in texts

    def skip_newlines(self) -> None:
        while self.at_op("\n"):
            self.i += 1

    def block(self, stop: frozenset[str]) -> Block:
        """Lists up to one of the closing words or operators in `stop`."""
        items: list[AndOr] = []
        while True:
            while self.at_op("\n", ";"):
                self.i += 1
            tok = self.peek()
            if tok is None or (tok.text in stop and (tok.kind != "word" or tok.text in _CLOSERS)):
                return tuple(items)
            if tok.kind != "word" and tok.text in (")", ";;") and not stop & {")", ";;"}:
                self.i += 1  # a stray closer: the reader moves on
                continue
            items.append(self.and_or(stop))

    def and_or(self, stop: frozenset[str]) -> AndOr:
        start = self.peek()
        assert start is not None
        pipelines = [self.pipeline(stop)]
        ops: list[str] = []
        while self.at_op("&&", "||"):
            ops.append(self.take().text)
            self.skip_newlines()
            if self.peek() is None:
                break
            pipelines.append(self.pipeline(stop))
        end = self.toks[self.i - 1].end
        terminator = None
        if self.at_op(";", "&", "\n"):
            terminator = self.take()
        elif self.at_op(";;"):
            terminator = self.peek()  # left for the `case`
        return AndOr(tuple(pipelines), tuple(ops), terminator, start.start, end)

    def pipeline(self, stop: frozenset[str]) -> Pipeline:
        negated = self.at_word("!")
        if negated:
            self.i += 1
        commands = [self.command(stop)]
        while self.at_op("|"):
            self.i += 1
            self.skip_newlines()
            if self.peek() is None:
                break
            commands.append(self.command(stop))
        return Pipeline(tuple(commands), negated)

    def command(self, stop: frozenset[str]) -> Command:
        tok = self.peek()
        assert tok is not None
        if tok.kind != "word":
            if tok.text == "(":
                return self.group(")")
            return self.simple(stop)
        nxt, after = self.peek(1), self.peek(2)
        if nxt is not None and after is not None and nxt.text == "(" and after.text == ")" \
                and nxt.kind == after.kind == "op" and not is_assignment(tok.text):
            self.i += 3
            return self.function(tok)
        word = tok.text
        if word == "function" and nxt is not None and nxt.kind == "word":
            self.i += 2
            if self.at_op("(") and (self.peek(1) or tok).text == ")":
                self.i += 2
            return self.function(nxt)
        if word == "{":
            return self.group("}")
        if word == "if":
            return self.if_()
        if word == "case":
            return self.case()
        if word in ("while", "until"):
            return self.while_()
        if word in ("for", "select"):
            return self.for_()
        return self.simple(stop)

    def function(self, name: Token) -> FunctionDef:
        self.skip_newlines()
        body = self.command(frozenset())
        return FunctionDef(name, body, name.start, body.end)

    def group(self, closer: str) -> Group:
        open_ = self.take()
        body = self.block(frozenset({closer}))
        close = self.take() if self.peek() is not None else None
        return Group(body, open_, close, self.redirects(), open_.start, self.last_end())

    def expect(self, word: str) -> None:
        if self.at_word(word):
            self.i += 1

    def if_(self) -> If:
        start = self.take().start
        conditions, bodies = [], []
        has_else = False
        while True:
            conditions.append(self.block(frozenset({"then"})))
            self.expect("then")
            bodies.append(self.block(frozenset({"elif", "else", "fi"})))
            if self.at_word("elif"):
                self.i += 1
                continue
            if self.at_word("else"):
                self.i += 1
                has_else = True
                bodies.append(self.block(frozenset({"fi"})))
            self.expect("fi")
            break
        return If(tuple(conditions), tuple(bodies), has_else, self.redirects(), start, self.last_end())

    def case(self) -> Case:
        start = self.take().start
        subject = self.take() if self.peek() is not None else Token("word", "", start, start)
        self.skip_newlines()
        self.expect("in")
        arms = []
        while True:
            self.skip_newlines()
            if self.peek() is None or self.at_word("esac"):
                break
            if self.at_op("("):
                self.i += 1
            patterns = []
            while self.peek() is not None and not self.at_op(")"):
                tok = self.take()
                if tok.kind == "word":
                    patterns.append(tok)
            if self.at_op(")"):
                self.i += 1
            arms.append((tuple(patterns), self.block(frozenset({";;", "esac"}))))
            if self.at_op(";;"):
                self.i += 1
        self.expect("esac")
        return Case(subject, tuple(arms), self.redirects(), start, self.last_end())

    def while_(self) -> Loop:
        keyword = self.take()
        condition = self.block(frozenset({"do"}))
        self.expect("do")
        body = self.block(frozenset({"done"}))
        self.expect("done")
        return Loop(keyword.text, None, None, condition, body, self.redirects(), keyword.start,
                    self.last_end())

    def for_(self) -> Loop:
        keyword = self.take()
        tok = self.peek()
        var = self.take() if tok is not None and tok.kind == "word" else None
        self.skip_newlines()
        items: tuple[Token, ...] | None = None
        if self.at_word("in"):
            self.i += 1
            words = []
            while (tok := self.peek()) is not None and tok.kind == "word":
                words.append(self.take())
            items = tuple(words)
        while self.at_op(";", "\n"):
            self.i += 1
        self.expect("do")
        body = self.block(frozenset({"done"}))
        self.expect("done")
        return Loop(keyword.text, var, items, (), body, self.redirects(), keyword.start, self.last_end())

    def redirects(self) -> tuple[Redirect, ...]:
        found = []
        while (tok := self.peek()) is not None:
            if tok.kind == "op" and tok.text in REDIRECTS and self.peek(1) is not None:
                self.i += 1
                found.append(Redirect(tok.text, self.take()))
            elif self.fd_before_redirect():
                self.i += 1
            else:
                break
        return tuple(found)

    def fd_before_redirect(self) -> bool:
        """A file descriptor number written against its redirection: `2>`."""
        tok, nxt = self.peek(), self.peek(1)
        return (tok is not None and nxt is not None and tok.kind == "word" and tok.text.isdigit()
                and nxt.kind == "op" and nxt.text in REDIRECTS and nxt.start == tok.end)

    def simple(self, stop: frozenset[str]) -> Simple:
        words: list[Token] = []
        redirects: list[Redirect] = []
        first = self.peek()
        assert first is not None
        while (tok := self.peek()) is not None:
            if tok.kind == "word":
                if words and words[0].text == "[[" and tok.text == "]]":
                    words.append(self.take())
                    break
                if self.fd_before_redirect():
                    self.i += 1
                    continue
                words.append(self.take())
                nxt = self.peek()
                if is_assignment(tok.text) and tok.text.endswith("=") and nxt is not None \
                        and nxt.text == "(" and nxt.start == tok.end:
                    self.array()
            elif tok.text in REDIRECTS and self.peek(1) is not None:
                redirects.extend(self.redirects())
            elif words and words[0].text == "[[" and tok.text not in ("\n",):
                self.i += 1  # `&&`, `||`, `<`, `(` inside [[ ]] are its own operators
            else:
                break
        if not words and not redirects:
            self.i += 1  # an operator where a command should be: read past it
            words.append(first)
        subs = tuple(self.substitutions(words, redirects))
        return Simple(tuple(words), tuple(redirects), subs, first.start, self.last_end())

    def array(self) -> None:
        """bash's NAME=(...): its words belong to the assignment."""
        depth = 0
        while (tok := self.peek()) is not None:
            self.i += 1
            depth += {"(": 1, ")": -1}.get(tok.text, 0) if tok.kind == "op" else 0
            if depth == 0:
                break

    def substitutions(self, words: list[Token], redirects: list[Redirect]) -> Iterator[tuple[int, Block]]:
        spans = self.lexed.substitutions
        for index, tok in enumerate([*words, *(r.target for r in redirects)]):
            for start, end in spans:
                if tok.start < start and end < tok.end:
                    yield index, parse(self.text, start, end)

    def last_end(self) -> int:
        return self.toks[self.i - 1].end if self.i else 0


@functools.lru_cache(maxsize=64)
def parse(text: str, start: int = 0, end: int | None = None) -> Block:
    """The lists of text[start:end] (offsets into `text`); the tree is
    immutable, so each edit's several reads of one file share it."""
    return _Parser(text, lex(text, start, end)).block(frozenset())


def commands(block: Block, *, subshells: bool = True) -> Iterator[Command]:
    """Every command of `block`, nested ones included, in order (not those
    of command substitutions; nor those of `( )` without `subshells`)."""
    for item in block:
        for pipeline in item.pipelines:
            for command in pipeline.commands:
                yield command
                yield from _inner(command, subshells)


def _inner(command: Command, subshells: bool) -> Iterator[Command]:
    if isinstance(command, FunctionDef):
        yield command.body
        yield from _inner(command.body, subshells)
    elif not isinstance(command, Simple):
        if isinstance(command, Group) and command.subshell and not subshells:
            return
        for block in children(command):
            yield from commands(block, subshells=subshells)


def children(command: If | Case | Loop | Group) -> tuple[Block, ...]:
    """The blocks a compound command holds, in order."""
    if isinstance(command, If):
        return tuple(b for pair in zip(command.conditions, command.bodies, strict=False) for b in pair) \
            + command.bodies[len(command.conditions):]
    if isinstance(command, Case):
        return tuple(body for _, body in command.arms)
    if isinstance(command, Loop):
        return (command.condition, command.body)
    return (command.body,)


def functions(block: Block) -> dict[str, list[FunctionDef]]:
    """Every function definition of the script, by name (nested ones too;
    not those of a subshell, which the script never sees)."""
    found: dict[str, list[FunctionDef]] = {}
    for command in commands(block, subshells=False):
        if isinstance(command, FunctionDef):
            found.setdefault(command.name.text, []).append(command)
    return found


def line_of(text: str, pos: int) -> tuple[int, str]:
    """(1-based line number, the line's content without its blanks) at `pos`."""
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text.count("\n", 0, pos) + 1, text[start : len(text) if end < 0 else end].strip()


def definitions(text: str, script: Block, name: str, path: str) -> list[tuple[FunctionDef, Group]]:
    """Every definition of function `name` (the shell runs the last one
    defined before the call, which only a run can tell), with its body: a
    `{ }` or `( )` group an edit can insert into. EditError naming `path`
    when there is none, or when one is not such a group or is not closed."""
    found = functions(script).get(name, [])
    if not found:
        raise EditError(f"{path}: function {name} not found")
    out = []
    for definition in found:
        body = definition.body
        where = f"{path}:{line_of(text, definition.start)[0]}"
        if not isinstance(body, Group):
            raise EditError(f"{where}: function {name} has no {{ }} body we can edit")
        if body.close is None:
            closer = "brace" if body.open.text == "{" else "parenthesis"
            raise EditError(f"{where}: function {name} has no closing {closer}")
        out.append((definition, body))
    return out
