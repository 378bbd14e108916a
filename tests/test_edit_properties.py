"""Property tests for every text and binary transform: applying twice equals
applying once, and lines the edit does not target survive byte for byte,
whatever lines surround a valid file (comments that look like targets, odd
characters, CRLF)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from vsaimage.edits import console, drivers, mobo_uuid, pci, platform
from vsaimage.edits.textfile import split_lines

RESERVED = {"function", "if", "then", "else", "elif", "fi", "case", "esac", "for", "while"}
RESERVED |= {"until", "do", "done", "in", "select", "time", "local", "export"}

DECOYS = [
    "# didMotherboardChange() {",
    "#   moboUUID=`dmidecode -s system-uuid`",
    "# base_init() {",
    "# }",
    "#!/bin/sh",
    "# modprobe xen_blkfront",
    '# moboUUID=$(dmidecode) "unbalanced',
    "#\x0c1:2345:respawn:/sbin/mingetty tty1",
    "# \x85s0:2345:respawn:/sbin/agetty ttyS0",
    "# \x1cmoboUUID=`dmidecode`",
]

# Comment text: any latin-1 but line breaks (a \r inside a line is kept too).
comment = st.text(
    alphabet=st.characters(min_codepoint=1, max_codepoint=255, exclude_characters="\n\r"), max_size=40
).map(lambda s: "#" + s)
command_word = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(lambda w: w not in RESERVED)
argument = st.one_of(
    st.from_regex(r"[A-Za-z0-9_./=%+-]{1,12}", fullmatch=True),
    st.from_regex(r'"[A-Za-z0-9 {}()#;|&<>]{0,12}"', fullmatch=True),
    st.from_regex(r"'[^'\n\r]{0,12}'", fullmatch=True),
)
command = st.builds(
    lambda indent, word, args: indent + " ".join([word, *args]),
    st.sampled_from(["", "    ", "\t"]),
    command_word,
    st.lists(argument, max_size=4),
)
shell_line = st.one_of(st.just(""), comment, command, st.sampled_from(DECOYS))
shell_lines = st.lists(shell_line, max_size=8)
newline = st.sampled_from(["\n", "\r\n"])


def join(lines: list[str], nl: str) -> str:
    return "".join(line + nl for line in lines)


def without_block(text: str, begin: str, end: str) -> str:
    """`text` with the lines from `begin` to `end` (inclusive) removed."""
    lines = split_lines(text)
    out: list[str] = []
    skipping = False
    for line in lines:
        if line.strip() == begin:
            skipping = True
        if not skipping:
            out.append(line)
        if line.strip() == end:
            skipping = False
    return "".join(out)


@settings(max_examples=150, deadline=None)
@given(shell_lines, shell_lines, shell_lines, shell_lines, newline, st.booleans())
def test_mobo_uuid(
    before: list[str], head: list[str], tail: list[str], after: list[str], nl: str, dollar: bool
) -> None:
    assignment = "    moboUUID=" + ("$(dmidecode -s system-uuid)" if dollar else "`dmidecode -s system-uuid`")
    lines = [*before, "didMotherboardChange() {", *head, assignment, *tail, "}", *after]
    text = join(lines, nl)
    once = mobo_uuid.patch(text)
    assert mobo_uuid.patch(once) == once
    assert once.count(mobo_uuid.BEGIN) == 1
    assert without_block(once, mobo_uuid.BEGIN, mobo_uuid.END) == text


@settings(max_examples=150, deadline=None)
@given(shell_lines, shell_lines, shell_lines, newline, st.sampled_from(["base_init() {", "base_init ()\n{"]))
def test_platform(before: list[str], body: list[str], after: list[str], nl: str, header: str) -> None:
    text = join([*before, header, *body, "}", *after], nl)
    once = platform.patch(text, "/etc/lefthand/brand/vmnsm")
    assert platform.patch(once, "/etc/lefthand/brand/vmnsm") == once
    kept = [line for line in split_lines(once) if not line.rstrip().endswith(platform.MARKER)]
    assert "".join(kept) == text


@settings(max_examples=150, deadline=None)
@given(st.booleans(), st.lists(st.one_of(comment, st.just("")), max_size=6), shell_lines, newline)
def test_drivers(shebang: bool, comments: list[str], rest: list[str], nl: str) -> None:
    text = join(["#!/bin/sh"] if shebang else [], nl) + join(comments, nl) + join(rest, nl)
    once = drivers.patch(text)
    assert drivers.patch(once) == once
    assert without_block(once, drivers.BEGIN, drivers.END) == text
    # nothing but comments and blank lines above the block
    above = once[: once.index(drivers.BEGIN)]
    assert all(not line.strip() or line.lstrip().startswith("#") for line in above.split("\n"))


inittab_id = st.sampled_from(["1", "2", "6", "s0", "S0", "7", "10", "id", "l3", "x", "#1", "# 2", "s1"])
inittab_entry = st.builds(
    lambda ident, rest: f"{ident}:{rest}",
    inittab_id,
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=30),
)
inittab_lines = st.lists(st.one_of(st.just(""), comment, inittab_entry, st.sampled_from(DECOYS)), max_size=15)


@settings(max_examples=200, deadline=None)
@given(inittab_lines, newline, st.booleans(), st.booleans())
def test_inittab(lines: list[str], nl: str, autologin: bool, final_newline: bool) -> None:
    text = join(lines, nl)
    if not final_newline:
        text = text.removesuffix(nl)
    once = console.patch_inittab(text, autologin)
    assert console.patch_inittab(once, autologin) == once
    new_lines = split_lines(once)
    # what tty1 ran, on hvc0 (the unit tests pin which line that is)
    assert new_lines[-1].startswith("hvc:")
    if autologin:
        assert new_lines[-1].rstrip("\r\n") == console.AUTOLOGIN
    for old, new in zip(split_lines(text), new_lines, strict=False):
        ident = old.split(":", 1)[0]
        expected = "#" + old if ident in console.DISABLED_IDS else old
        assert new.rstrip("\r\n") == expected.rstrip("\r\n")
        if old.endswith("\n"):
            assert new == expected


@given(
    st.lists(st.one_of(st.from_regex(r"[a-z/0-9]{1,8}", fullmatch=True), st.just("")), max_size=8), newline
)
def test_securetty(lines: list[str], nl: str) -> None:
    text = join(lines, nl)
    once = console.patch_securetty(text)
    assert console.patch_securetty(once) == once
    assert once.startswith(text) and "hvc0" in once.split()


@given(st.lists(st.one_of(st.binary(max_size=40), st.just(pci.REAL_PATH.encode())), max_size=8))
def test_binary(parts: list[bytes]) -> None:
    data = b"".join(parts)
    once, count = pci.patch_binary(data)
    assert pci.patch_binary(once) == (once, 0)
    assert len(once) == len(data) and count == data.count(pci.REAL_PATH.encode())
    # every byte outside a replaced occurrence is untouched
    old = pci.REAL_PATH.encode()
    touched: set[int] = set()
    start = data.find(old)
    while start >= 0:
        touched |= set(range(start, start + len(old)))
        start = data.find(old, start + len(old))
    assert all(once[i] == data[i] for i in range(len(data)) if i not in touched)
