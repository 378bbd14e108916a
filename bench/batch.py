"""Batch benchmark: one `vsaimage convert A B C -o DIR` against three single
converts of the same images, `--modules minimal`.

    python -m bench.batch [--reps N]

Every figure comes from this one run; within each repetition the batch and
the three singles run one after the other, in alternating order, so that
both see the same machine load; medians are reported. The images are the
example disk in three layouts (stock, alt, symlinks), so each has its own
partitions and paths. Per-phase times come from each convert's `--json`
(shared phases: the launch, the initrd read and repack, the modules payload;
per image: copy, plan, edits, modules transfer, verify).

Writes bench/results/batch.json and bench/results/batch.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fixtures.build_image import cached_image
from vsaimage import __version__
from vsaimage.kmod import kernel

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work" / "batch"
LAYOUTS = ("stock", "alt", "symlinks")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _convert(images: list[Path], out: Path, vmlinuz: Path, initrd: Path) -> dict[str, Any]:
    """One `vsaimage convert` (a batch when several images, -o a directory)."""
    target = out if len(images) > 1 else out / f"{images[0].stem}.img"
    cmd = [sys.executable, "-m", "vsaimage", "convert", *map(str, images), "--kernel", str(vmlinuz),
           "--initrd", str(initrd), "-o", str(target), "--modules", "minimal", "--json", "-q"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"convert failed ({proc.returncode}): {proc.stderr.strip()}")
    doc = json.loads(proc.stdout)
    for p in out.iterdir():
        p.unlink()
    per_image = {Path(i["input"]).stem: i["timings"] for i in doc["images"]} if doc.get("batch") else {
        images[0].stem: doc["timings"]}
    return {"wall": round(wall, 2), "appliance_launches": doc["appliance_launches"],
            "timings": doc["timings"] if doc.get("batch") else {}, "images": per_image}


def _singles(images: list[Path], out: Path, vmlinuz: Path, initrd: Path) -> dict[str, Any]:
    runs = [_convert([i], out, vmlinuz, initrd) for i in images]
    return {"wall": round(sum(r["wall"] for r in runs), 2),
            "appliance_launches": sum(r["appliance_launches"] for r in runs),
            "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)

    if WORK.exists():
        shutil.rmtree(WORK)
    out = WORK / "out"
    out.mkdir(parents=True)
    vmlinuz = sorted(Path("/boot").glob("vmlinuz-*"))[-1]
    version = kernel.kernel_version(vmlinuz)
    # Package installs regenerate /boot/initrd.img-*: work on a copy.
    initrd = WORK / f"initrd.img-{version}"
    shutil.copyfile(Path("/boot") / f"initrd.img-{version}", initrd)
    images = []
    for n, layout in enumerate(LAYOUTS, 1):
        image = WORK / f"vsa{n}.img"
        subprocess.run(["cp", "--sparse=always", str(cached_image(layout)), str(image)], check=True)
        images.append(image)

    load_start = _load()
    samples: dict[str, list[dict[str, Any]]] = {"batch": [], "singles": []}
    for rep in range(args.reps):
        order = ("batch", "singles") if rep % 2 == 0 else ("singles", "batch")
        for variant in order:
            load = _load()
            if variant == "batch":
                r = _convert(images, out, vmlinuz, initrd)
            else:
                r = _singles(images, out, vmlinuz, initrd)
            r["load"] = load
            samples[variant].append(r)
            print(f"rep {rep + 1} {variant}: {r['wall']:.1f} s, {r['appliance_launches']} launch(es)",
                  flush=True)
    load_end = _load()

    med = {v: round(statistics.median(s["wall"] for s in samples[v]), 2) for v in samples}
    batch_phases = {k: round(statistics.median(s["timings"].get(k, 0.0) for s in samples["batch"]), 2)
                    for k in samples["batch"][0]["timings"]}
    image_phases = {
        name: {k: round(statistics.median(s["images"][name].get(k, 0.0) for s in samples["batch"]), 2)
               for k in samples["batch"][0]["images"][name]}
        for name in samples["batch"][0]["images"]}
    singles = [[s["runs"][i]["images"][p.stem] for s in samples["singles"]] for i, p in enumerate(images)]
    single_phases = {p.stem: {k: round(statistics.median(t.get(k, 0.0) for t in runs), 2) for k in runs[0]}
                     for p, runs in zip(images, singles, strict=True)}
    result = {
        "tool_version": __version__, "kernel": version, "reps": args.reps, "layouts": list(LAYOUTS),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load": {"start": load_start, "end": load_end},
        "median_wall": med, "speedup": round(med["singles"] / med["batch"], 2),
        "batch_shared_phases": batch_phases, "batch_image_phases": image_phases,
        "single_phases": single_phases, "samples": samples,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "batch.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Batch benchmark",
        "",
        f"`vsaimage convert` of three VSA disks (the example image in the {', '.join(LAYOUTS)} layouts),",
        f"`--modules minimal`, kernel {version}: one batch convert (one appliance launch) against",
        f"three single converts, {args.reps} interleaved repetitions, medians; TCG, {os.cpu_count()} CPUs.",
        f"Load average (1, 5, 15 min) at the start {load_start}, at the end {load_end}; each",
        "run's load is in batch.json (`samples`).",
        "",
        "| run | median s | appliance launches |",
        "|---|---|---|",
        f"| batch of 3 | {med['batch']} | {samples['batch'][0]['appliance_launches']} |",
        f"| 3 single converts | {med['singles']} | {samples['singles'][0]['appliance_launches']} |",
        "",
        f"Batch / singles: {round(med['batch'] / med['singles'], 2)} (singles take {result['speedup']}x).",
        "",
        "Median seconds per phase, batch: shared "
        + ", ".join(f"{k} {v}" for k, v in batch_phases.items()) + "; per image:",
        *(f"- {n}: " + ", ".join(f"{k} {v}" for k, v in ph.items()) for n, ph in image_phases.items()),
        "",
        "Single converts, per image:",
        *(f"- {n}: " + ", ".join(f"{k} {v}" for k, v in ph.items()) for n, ph in single_phases.items()),
        "",
    ]
    (RESULTS / "batch.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
