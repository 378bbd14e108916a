"""An xl config read back: `convert --in-place` keeps what the config it
replaces says of the domain (its name, uuid, MAC and bridge, memory, vCPUs,
data disks, guest type, boot mode and the --extra kernel arguments) unless
the command line says otherwise, so that the VSA keeps its identity and the
admin's settings. It also reads what says the VM has several system disks
(xvdb, a root on an md array), which --in-place refuses; the VSA's own
kernel arguments in `extra` are not kept: they are read again from the
slot it boots.

It reads xl's syntax (libxlu's: `key = value` settings ended by a newline or
`;`, strings in either quote with backslash escapes, integers, lists that
may span lines, `#` comments) as far as these keys need; the disk and vif
specs are `k=v` items, a disk's `target=` taking the rest of the spec. A
config it cannot read, or whose values the command line would refuse, is
one line naming the file. Pure: text in, settings out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vsaimage.errors import BadInput
from vsaimage.xen import xlcfg

_LEXEME = re.compile(r"""
    (?P<skip>\s+|\#[^\n]*)
  | (?P<key>[A-Za-z_]\w*)
  | (?P<int>\d+)
  | (?P<text>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')
  | (?P<mark>[=\[\],;])
""", re.VERBOSE)

Value = str | int | list[str | int]


@dataclass(frozen=True)
class Kept:
    """What a config says that a convert would take from its options
    (None or empty: the config does not say)."""

    name: str | None = None
    memory: int | None = None
    vcpus: int | None = None
    uuid: str | None = None
    mac: str | None = None
    bridge: str | None = None
    data_disks: tuple[str, ...] = ()
    boot: str | None = None
    guest_type: str | None = None
    user_args: tuple[str, ...] | None = None  # --extra's, after vsaimage's own in `extra`
    system_disks: tuple[str, ...] = ()  # the VM's other system disks (xvdb)
    root_array: str | None = None  # `root` naming an md array


def _lexemes(text: str, where: str) -> list[tuple[str, str]]:
    found = []
    pos = 0
    while pos < len(text):
        m = _LEXEME.match(text, pos)
        if m is None:
            line = text.count("\n", 0, pos) + 1
            raise BadInput(f"{where}:{line}: not an xl config ({text[pos:pos + 12]!r})")
        if m.lastgroup != "skip":
            assert m.lastgroup is not None
            found.append((m.lastgroup, m.group()))
        pos = m.end()
    return found


def _literal(kind: str, word: str) -> str | int:
    if kind == "int":
        return int(word)
    return re.sub(r"\\(.)", r"\1", word[1:-1])


def read(text: str, where: str) -> dict[str, Value]:
    """The settings of an xl config (the last one wins for a key set twice,
    as in xl)."""
    items = _lexemes(text, where)
    settings: dict[str, Value] = {}
    i = 0

    def fail(why: str) -> BadInput:
        return BadInput(f"{where}: not an xl config: {why}")

    while i < len(items):
        if items[i] == ("mark", ";"):
            i += 1
            continue
        if items[i][0] != "key" or items[i + 1:i + 2] != [("mark", "=")]:
            raise fail(f"expected `key = value`, found {items[i][1]!r}")
        key, i = items[i][1], i + 2
        if i < len(items) and items[i] == ("mark", "["):
            values: list[str | int] = []
            i += 1
            while i < len(items) and items[i] != ("mark", "]"):
                if items[i][0] in ("int", "text"):
                    values.append(_literal(*items[i]))
                elif items[i] != ("mark", ","):
                    raise fail(f"unexpected {items[i][1]!r} in the list of {key}")
                i += 1
            if i == len(items):
                raise fail(f"the list of {key} has no end")
            settings[key] = values
            i += 1
        elif i < len(items) and items[i][0] in ("int", "text"):
            settings[key] = _literal(*items[i])
            i += 1
        else:
            raise fail(f"{key} has no value")
    return settings


def spec_items(spec: str) -> dict[str, str]:
    """The `k=v` items of a disk or vif spec; `target=` is the rest."""
    found: dict[str, str] = {}
    head, has_target, target = spec.partition("target=")
    for item in head.split(","):
        key, eq, value = item.partition("=")
        if eq:
            found[key.strip()] = value.strip()
    if has_target:
        found["target"] = target
    return found


def kept(text: str, where: str) -> Kept:
    """What the config at `where` (its text) says of the domain, each value
    checked as the command line checks it."""
    settings = read(text, where)

    def text_of(key: str) -> str | None:
        value = settings.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise BadInput(f"{where}: {key} is not a string")
        return value

    def number(key: str) -> int | None:
        value = settings.get(key)
        if value is None:
            return None
        if not isinstance(value, int):
            raise BadInput(f"{where}: {key} is not a number")
        return xlcfg.positive(value, f"{where}: {key}")

    vifs = [spec_items(str(v)) for v in _list(settings, "vif", where)]
    vif = vifs[0] if vifs else {}
    disks = [spec_items(str(d)) for d in _list(settings, "disk", where)]
    data = tuple(d["target"] for d in disks if d.get("vdev") in xlcfg.DATA_VDEVS and "target" in d)
    system = tuple(d["target"] for d in disks if d.get("vdev") in xlcfg.SYSTEM_VDEVS[1:] and "target" in d)
    extra, root = text_of("extra"), text_of("root")
    try:
        name = text_of("name")
        return Kept(
            name=xlcfg.validate_name(name) if name is not None else None,
            memory=number("memory"),
            vcpus=number("vcpus"),
            uuid=xlcfg.validate_uuid(u) if (u := text_of("uuid")) is not None else None,
            mac=xlcfg.validate_mac(vif["mac"]) if "mac" in vif else None,
            bridge=xlcfg.validate_bridge(vif["bridge"]) if "bridge" in vif else None,
            data_disks=data,
            boot=_boot(text_of("bootloader"), text_of("kernel")),
            guest_type=_guest_type(text_of("type"), where),
            user_args=xlcfg.user_args_of(extra) if extra is not None else None,
            system_disks=system,
            root_array=root if root is not None and root.startswith("/dev/md") else None,
        )
    except BadInput as e:
        if e.message.startswith(where):
            raise
        raise BadInput(f"{where}: {e.message}", hint=e.hint) from None


def _list(settings: dict[str, Value], key: str, where: str) -> list[str | int]:
    value = settings.get(key, [])
    if not isinstance(value, list):
        raise BadInput(f"{where}: {key} is not a list")
    return value


def _boot(bootloader: str | None, kernel: str | None) -> str:
    if bootloader is not None and bootloader.rsplit("/", 1)[-1] == "pygrub":
        return "pygrub"
    if kernel in xlcfg.PVGRUB.values():
        return "pvgrub"
    return "direct"


def _guest_type(value: str | None, where: str) -> str | None:
    if value is not None and value not in xlcfg.GUEST_TYPES:
        raise BadInput(f"{where}: type {value!r} is not one vsaimage writes ({', '.join(xlcfg.GUEST_TYPES)})")
    return value
