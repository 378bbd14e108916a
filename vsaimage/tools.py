"""The external programs vsaimage runs (qemu-img, gzip, xz, zstd, depmod,
lz4): found in one way, and their failures said in one way.

A program that is not installed is a MissingTool (exit 1: the machine lacks
it, the user's input is not at fault), whichever step needed it. A program
that fails is said in one line, `reason()`, which the caller puts into the
error of its own step (bad input, a write that failed, ...).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from vsaimage.errors import MissingTool

# depmod lives in /sbin or /usr/sbin, which an ordinary user's PATH may lack.
_SBIN = ("/usr/sbin", "/sbin")


def find(name: str, package: str, *, otherwise: str | None = None) -> str:
    """The path of the program `name`; MissingTool naming the Debian
    `package` that has it (and `otherwise`, what the user can do instead)."""
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", os.defpath), *_SBIN]))
    if found is None:
        raise MissingTool(f"{name} is not installed",
                          hint=f"install {package}" + (f", or {otherwise}" if otherwise else ""))
    return found


def run(argv: Sequence[str], package: str, *, otherwise: str | None = None, timeout: float | None = None,
        env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the program argv[0] (found as find() does) with the rest of
    `argv`, its output captured as text; no input. The caller reads
    returncode (and reason() of what it printed)."""
    return subprocess.run([find(argv[0], package, otherwise=otherwise), *argv[1:]],
                          capture_output=True, text=True,
                          timeout=timeout, env=None if env is None else {**os.environ, **env},
                          stdin=subprocess.DEVNULL, check=False)


def reason(output: str, program: str, *, names: Sequence[str] = (), default: str) -> str:
    """What a failed program said, in one line: its first line reporting an
    ERROR (`qemu-img check` lists every bad cluster and ends with a
    summary), else its last line that it signed `PROGRAM: `, else its last
    line; without the `PROGRAM: ` and `ERROR: ` prefixes, nor a leading
    `'FILE': ` or `FILE: ` naming one of `names`, which the caller's message
    names already. `default` when it said nothing."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    signed = [line for line in lines if line.startswith(f"{program}: ")]
    errors = [line for line in lines if line.removeprefix(f"{program}: ").startswith("ERROR")]
    said = errors[0] if errors else signed[-1] if signed else lines[-1] if lines else None
    if said is None:
        return default
    prefixes = (f"{program}: ", "ERROR: ",
                *(p for n in names for p in (f"Could not open '{n}': ", f"'{n}': ", f"{n}: ")))
    while found := next((p for p in prefixes if said.startswith(p)), None):
        said = said[len(found):]
    return said
