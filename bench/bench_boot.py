"""Boot-mode benchmark: what `--boot pygrub` (the disk carries its own kernel
and initrd) costs over `--boot direct`, both `convert --modules minimal` of
the example image, interleaved within each repetition; medians, the ratio to
direct from the same run, and the phases that differ: the wait for the
repacked initrd (a direct convert writes it beside the disk while the guest
is edited; the disk's copy needs it before the edits) and the upload of the
two files into the boot partition.

    python -m bench.bench_boot [--reps N]

Writes bench/results/boot.json and bench/results/boot.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
from pathlib import Path
from typing import Any

from bench.bench_inputs import WORK, _run
from bench.run import _load
from fixtures.build_image import cached_image
from vsaimage import __version__
from vsaimage.kmod import kernel

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("direct", "pygrub")
# the phases a --boot pygrub convert adds
PHASES = ("initrd repack (wait)", "boot files")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_boot", description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args(argv)
    raw = cached_image("stock")
    vmlinuz = sorted(Path("/boot").glob("vmlinuz-*"))[-1]
    version = kernel.kernel_version(vmlinuz)
    WORK.mkdir(parents=True, exist_ok=True)
    initrd = WORK / "initrd.img"
    shutil.copyfile(Path("/boot") / f"initrd.img-{version}", initrd)
    cache = WORK / "appliance-cache"
    cache.mkdir(exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    loads = [_load()]
    for rep in range(a.reps):
        for mode in MODES:
            runs[mode].append(_run(["convert", str(raw), "--kernel", str(vmlinuz), "--initrd", str(initrd),
                                    "-o", "OUT/vsa-xen.img", "--modules", "minimal", "--boot", mode], cache))
            print(f"rep {rep + 1} {mode}: {runs[mode][-1]}", flush=True)
        loads.append(_load())
    shutil.rmtree(WORK / "out", ignore_errors=True)
    shutil.rmtree(WORK / "tmp", ignore_errors=True)

    def median(mode: str) -> float:
        return statistics.median(r["seconds"] for r in runs[mode])

    def phase(mode: str, name: str) -> float:
        return statistics.median(r["phases"].get(name, 0.0) for r in runs[mode])

    summary = {m: {"median_seconds": median(m), "ratio_to_direct": round(median(m) / median("direct"), 2),
                   "phases": {n: phase(m, n) for n in PHASES}} for m in MODES}
    doc = {"tool_version": __version__, "python": platform.python_version(), "cpus": os.cpu_count(),
           "reps": a.reps, "kernel": version, "loadavg": loads, "summary": summary, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "boot.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# Boot modes: what the disk's own kernel costs",
        "",
        f"`vsaimage convert --modules minimal` of the example image with `--boot direct` and "
        f"`--boot pygrub`, {a.reps} repetitions interleaved, medians; kernel {version}, libguestfs "
        f"under TCG, {os.cpu_count()} CPUs, load average {loads[0][0]}–{max(x[0] for x in loads)}. "
        "The ratio is to direct in the same run.",
        "",
        "| run | median s | / direct | " + " | ".join(f"{n} s" for n in PHASES) + " |",
        "|---|---|---|" + "---|" * len(PHASES),
    ]
    for m in MODES:
        s = summary[m]
        lines.append(f"| convert --boot {m} | {s['median_seconds']:.1f} | {s['ratio_to_direct']:.2f} | "
                     + " | ".join(f"{s['phases'][n]:.1f}" for n in PHASES) + " |")
    (RESULTS / "boot.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
