"""Input-format benchmark: `vsaimage convert --modules minimal` of the same
example image given as raw, as a monolithic sparse VMDK, as an OVA and as a
gzipped dd (`vsa.img.gz`), with the raw input as the baseline; and
`vsaimage inspect` of the raw image, the OVA and the `.gz`, the two that
need a temporary copy under TMPDIR.

    python -m bench.bench_inputs [--reps N]

For each run: the wall time, and the peak disk usage: the bytes allocated
under the output directory and under TMPDIR (a fresh directory per run),
sampled every 50 ms while convert runs, and what is left at the end (the
output). libguestfs keeps its appliance cache in LIBGUESTFS_CACHEDIR, set to
a shared directory, so it is not counted (it is not per conversion). The
variants are interleaved within each repetition so that all of them see the
same machine load; medians are reported, with ratios to raw from the same
run. Writes bench/results/inputs.json and bench/results/inputs.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bench.run import REPO, _load
from fixtures.build_image import cached_image
from fixtures.formats import cached_variant
from vsaimage import __version__
from vsaimage.kmod import kernel

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work" / "inputs"
VARIANTS = ("raw", "vmdk-sparse", "ova", "gzip")
INSPECTED = ("raw", "ova", "gzip")


def _allocated(top: Path) -> int:
    total = 0
    for d, _dirs, files in os.walk(top):
        for f in files:
            with contextlib.suppress(FileNotFoundError):  # removed while we walked
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
    return total


def _run(args: list[str], cache: Path) -> dict[str, Any]:
    """Run `vsaimage ARGS --json` with OUT and TMPDIR fresh directories."""
    out_dir, tmp = WORK / "out", WORK / "tmp"
    for d in (out_dir, tmp):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    env = {**os.environ, "TMPDIR": str(tmp), "LIBGUESTFS_CACHEDIR": str(cache)}
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, _allocated(out_dir) + _allocated(tmp))

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    try:
        cmd = [a.replace("OUT", str(out_dir)) for a in args]
        r = subprocess.run([str(REPO / ".venv/bin/vsaimage"), *cmd, "--json"],
                           capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
    finally:
        done.set()
        sampler.join()
    if r.returncode != 0:
        raise SystemExit(f"{args} failed: {r.stderr.strip().splitlines()[-1:]}")
    doc = json.loads(r.stdout)
    left = _allocated(out_dir) + _allocated(tmp)
    peak = max(peak, left)
    return {"seconds": round(elapsed, 2), "peak_bytes": peak, "final_bytes": left,
            "phases": doc.get("timings", {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_inputs", description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args(argv)
    raw = cached_image("stock")
    inputs = {v: raw if v == "raw" else cached_variant(raw, v) for v in VARIANTS}
    vmlinuz = sorted(Path("/boot").glob("vmlinuz-*"))[-1]
    version = kernel.kernel_version(vmlinuz)
    initrd = WORK / "initrd.img"
    WORK.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path("/boot") / f"initrd.img-{version}", initrd)
    cache = WORK / "appliance-cache"
    cache.mkdir(exist_ok=True)
    jobs = {f"convert {v}": ["convert", str(inputs[v]), "--kernel", str(vmlinuz), "--initrd", str(initrd),
                             "-o", "OUT/vsa-xen.img", "--modules", "minimal"] for v in VARIANTS}
    jobs.update({f"inspect {v}": ["inspect", str(inputs[v])] for v in INSPECTED})
    runs: dict[str, list[dict[str, Any]]] = {j: [] for j in jobs}
    loads = [_load()]
    for rep in range(a.reps):
        for j, args in jobs.items():
            runs[j].append(_run(args, cache))
            print(f"rep {rep + 1} {j}: {runs[j][-1]}", flush=True)
        loads.append(_load())
    shutil.rmtree(WORK / "out", ignore_errors=True)
    shutil.rmtree(WORK / "tmp", ignore_errors=True)

    def median(j: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[j])

    def input_bytes(v: str) -> int:
        files = [raw] if v == "raw" else list(inputs[v].parent.iterdir())
        return sum(f.stat().st_blocks * 512 for f in files)

    summary = {}
    for j in jobs:
        command, v = j.split()
        base = f"{command} raw"
        summary[j] = {"input_bytes": input_bytes(v), "median_seconds": median(j, "seconds"),
                      "time_ratio": round(median(j, "seconds") / median(base, "seconds"), 2),
                      "median_peak_bytes": median(j, "peak_bytes"),
                      # no ratio to a baseline of (almost) nothing
                      "peak_ratio": round(median(j, "peak_bytes") / median(base, "peak_bytes"), 2)
                      if median(base, "peak_bytes") >= 2**20 else None,
                      "median_final_bytes": median(j, "final_bytes")}
    doc = {"tool_version": __version__, "python": platform.python_version(), "cpus": os.cpu_count(),
           "reps": a.reps, "kernel": version, "loadavg": loads, "summary": summary, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inputs.json").write_text(json.dumps(doc, indent=2) + "\n")
    mib = 2**20
    lines = [
        "# Input formats: convert and inspect time, peak disk usage",
        "",
        f"`vsaimage convert --modules minimal` and `vsaimage inspect` of the example image "
        f"(6 GiB virtual, about 15 MiB of data) in each input format, {a.reps} repetitions "
        f"interleaved, medians; kernel {version}, libguestfs under TCG, {os.cpu_count()} CPUs, "
        f"load average {loads[0][0]}–{max(x[0] for x in loads)}. Peak disk: bytes allocated under the "
        "output directory and TMPDIR, sampled every 50 ms (the libguestfs appliance cache excluded); "
        "ratios to the raw input of the same command in the same run.",
        "",
        "| run | input size MiB | median s | / raw | peak disk MiB | / raw | left (output) MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for j, s in summary.items():
        ratio = "–" if s["peak_ratio"] is None else f"{s['peak_ratio']:.2f}"
        lines.append(f"| {j} | {s['input_bytes'] / mib:.1f} | {s['median_seconds']:.1f} "
                     f"| {s['time_ratio']:.2f} | {s['median_peak_bytes'] / mib:.1f} | {ratio} "
                     f"| {s['median_final_bytes'] / mib:.1f} |")
    (RESULTS / "inputs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
