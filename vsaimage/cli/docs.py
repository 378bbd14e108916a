"""The README's table of options, made from the option table: `python -m
vsaimage.cli.docs` prints it, and a test checks that the README holds
exactly that text between its markers."""

from __future__ import annotations

from vsaimage.commands.options import COMMANDS, OPTIONS, Option

BEGIN = "<!-- options: made by `python -m vsaimage.cli.docs` from vsaimage/commands/options.py -->"
END = "<!-- end of options -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _usage(option: Option) -> str:
    if not option.flags[0].startswith("-"):
        return option.flags[0].upper() + (" ..." if option.nargs == "+" else "")
    value = (option.metavar or ("|".join(option.choices) if option.choices else None)
             or (None if option.action in ("store_true", "count") else option.dest.upper()))
    return ", ".join(option.flags) + (f" {value}" if value else "")


def table() -> str:
    """The options of every command, one row each, in the table's order."""
    rows = ["| option | commands | what it does | default |", "|---|---|---|---|"]
    for option in OPTIONS:
        commands = "all" if option.common else ", ".join(c for c in COMMANDS if c in option.commands)
        default = "" if option.default in (None, False, [], 0) else f"`{option.default}`"
        rows.append(f"| `{_cell(_usage(option))}` | {commands} | {_cell(option.doc or option.help)} "
                    f"| {default} |")
    return "\n".join([BEGIN, *rows, END])


if __name__ == "__main__":
    print(table())
