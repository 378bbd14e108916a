"""depmod, which writes a modules tree's indexes (modules.dep and the .bin
files kmod reads), run on a copy of a tree: the initrd's modules directory
with the drivers added, or the minimal payload's tree."""

from __future__ import annotations

from pathlib import Path

from vsaimage import tools

# What depmod reads besides the modules (their order, and the list of
# built-in modules, so that modprobe of one of those succeeds); it writes
# every other modules.* file. mkinitramfs copies them from the tree too.
INPUTS = ("modules.builtin", "modules.builtin.modinfo", "modules.order")


def depmod(base: Path, version: str, *, config: Path | None = None,
           otherwise: str | None = None) -> str | None:
    """Run depmod on `base`/lib/modules/`version`; `config`: the directory
    of its configuration (else the system's). Returns why it failed (None
    when it did not); `otherwise` is what the user can do without depmod."""
    argv = ["depmod", "-a", "-b", str(base), *(("-C", str(config)) if config else ()), version]
    run = tools.run(argv, "kmod", otherwise=otherwise, env={"LC_ALL": "C"})
    if run.returncode == 0:
        return None
    return tools.reason(run.stderr, "depmod", names=[str(base)], default=f"exit status {run.returncode}")
