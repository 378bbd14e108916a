"""A small reader of xl's config syntax, written for the tests only.

It shares nothing with vsaimage/xlcfg.py on purpose: the rendered config is
checked by parsing it back the way xl would (libxlu's grammar: `key = value`
settings ended by a newline or ';', values are strings in single or double
quotes with backslash escapes, integers, or lists `[ a, b, ]` that may span
lines; `#` starts a comment outside strings).
"""

from __future__ import annotations

import re

Value = str | int | list[str | int]


class XlSyntaxError(ValueError):
    pass


_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r]+)
  | (?P<comment>\#[^\n]*)
  | (?P<nl>\n)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>0x[0-9A-Fa-f]+|[0-9]+)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[=\[\],;])
    """,
    re.VERBOSE,
)


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            nxt = body[i + 1]
            if nxt.isalnum():
                # xl refuses letter escapes (\n, \t...) other than \x and octal,
                # which the renderer never needs to produce.
                raise XlSyntaxError(f"unsupported escape \\{nxt} in {literal}")
            out.append(nxt)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise XlSyntaxError(f"line {line}: unexpected {text[pos:pos + 10]!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind == "nl":
            tokens.append(("end", "\n", line))
            line += 1
        elif kind not in ("ws", "comment"):
            tokens.append((kind, m.group(), line))
        pos = m.end()
    tokens.append(("end", "", line))
    return tokens


def parse(text: str) -> dict[str, Value]:
    """Settings of an xl config; a key set twice is an error here (xl would
    take the last one, but the renderer never has a reason to repeat one)."""
    toks = _tokens(text)
    i = 0
    settings: dict[str, Value] = {}

    def atom(j: int) -> tuple[str | int, int]:
        kind, val, ln = toks[j]
        if kind == "string":
            return _unquote(val), j + 1
        if kind == "number":
            return int(val, 0), j + 1
        raise XlSyntaxError(f"line {ln}: expected a string or number, got {val!r}")

    def skip_newlines(j: int) -> int:
        while toks[j][0] == "end" and toks[j][1] == "\n":
            j += 1
        return j

    while True:
        i = skip_newlines(i)
        while toks[i][1] == ";":
            i = skip_newlines(i + 1)
        kind, key, ln = toks[i]
        if kind == "end":
            break
        if kind != "ident":
            raise XlSyntaxError(f"line {ln}: expected a key, got {key!r}")
        if toks[i + 1][1] != "=":
            raise XlSyntaxError(f"line {ln}: expected '=' after {key}")
        i += 2
        value: Value
        if toks[i][1] == "[":
            items: list[str | int] = []
            i = skip_newlines(i + 1)
            while toks[i][1] != "]":
                item, i = atom(i)
                items.append(item)
                i = skip_newlines(i)
                if toks[i][1] == ",":
                    i = skip_newlines(i + 1)
                elif toks[i][1] != "]":
                    raise XlSyntaxError(f"line {toks[i][2]}: expected ',' or ']' in list")
            value = items
            i += 1
        else:
            value, i = atom(i)
        if toks[i][0] != "end" and toks[i][1] != ";":
            raise XlSyntaxError(f"line {toks[i][2]}: junk after the value of {key}")
        if key in settings:
            raise XlSyntaxError(f"line {ln}: {key} set twice")
        settings[key] = value
    return settings


def parse_spec(spec: str) -> dict[str, str]:
    """`k=v, k=v` items of a disk or vif spec. `target=` takes the rest of the
    string verbatim, commas included, as xl's disk parser does."""
    out: dict[str, str] = {}
    rest = spec
    while rest:
        rest = rest.lstrip(" ")
        if rest.startswith("target="):
            out["target"] = rest[len("target="):]
            break
        item, _, rest = rest.partition(",")
        k, eq, v = item.partition("=")
        if not eq:
            raise XlSyntaxError(f"item without '=' in {spec!r}")
        out[k.strip()] = v.strip()
    return out
