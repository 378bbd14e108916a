"""Initrd repack time: vsaimage vs the shell pipeline it replaces.

    python -m bench.bench_initrd [--reps N]

Times, in the same run and interleaved (so both see the same machine load):
- vsaimage: `vsaimage initrd` of the Debian initrd from /boot, file to file,
  in a subprocess (bench/selfrss.py) that also reports its peak RSS;
- shell: `unmkinitramfs` + `find | sort | cpio -o -H newc | zstd -9 -T0`;
- 3cpio is noted, not run: the distribution's apt sources have to carry it.
Writes bench/results/initrd.json and bench/results/initrd.md.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from libarchive import ffi

from vsaimage.initrd import archive

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SHELL_PACK = "find . | LC_ALL=C sort | cpio -o -H newc --quiet | zstd -q -9 -T0"


def _vsaimage(src: Path, dst: Path, work: Path) -> dict[str, Any]:
    rss = work / "rss.json"
    proc = subprocess.run([sys.executable, "-m", "bench.selfrss", "initrd", str(src), "-o", str(dst),
                           "--force", "--json"], cwd=REPO, capture_output=True, text=True, check=True,
                          env={**os.environ, "BENCH_RSS_FILE": str(rss)})
    return {**json.loads(proc.stdout), "maxrss_kib": json.loads(rss.read_text())["maxrss_kib"]}


def _shell(src: Path, dst: Path, work: Path) -> None:
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["unmkinitramfs", str(src), str(tree)], check=True)
    # With early segments unmkinitramfs writes early/ and main/; repack main/.
    main = tree / "main" if (tree / "main").is_dir() else tree
    subprocess.run(f"{SHELL_PACK} > {dst}", shell=True, cwd=main, check=True)


def _version(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return "absent"
    return (proc.stdout or proc.stderr).strip().splitlines()[0]


def _three_cpio_note() -> str:
    # Only the apt sources count (no other registry): bookworm has no 3cpio.
    policy = subprocess.run(["apt-cache", "policy", "3cpio"], capture_output=True, text=True,
                            check=False).stdout
    if "Candidate:" in policy and "(none)" not in policy:
        return "packaged but not installed here; not measured"
    return "not packaged for this distribution; not measured"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    sources = sorted(glob.glob("/boot/initrd.img-*"))
    if not sources:
        parser.error("no /boot/initrd.img-* to benchmark")
    timings: dict[str, list[float]] = {"vsaimage": [], "shell": []}
    peaks: list[float] = []  # MiB
    sizes: dict[str, int] = {}
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "initrd.img"
        shutil.copyfile(sources[-1], src)
        for rep in range(args.reps):
            for name in timings:
                dst = work / f"out-{name}.img"
                start = time.perf_counter()
                if name == "vsaimage":
                    result = _vsaimage(src, dst, work)
                    peaks.append(result["maxrss_kib"] / 1024)
                else:
                    _shell(src, dst, work)
                timings[name].append(time.perf_counter() - start)
                sizes[name] = dst.stat().st_size
                print(f"rep {rep + 1}/{args.reps} {name}: {timings[name][-1]:.2f} s", flush=True)
        input_bytes = src.stat().st_size

    medians = {name: statistics.median(values) for name, values in timings.items()}
    doc = {
        "initrd": os.path.basename(sources[-1]),
        "input_bytes": input_bytes,
        "entries": result.get("entries"),
        "repetitions": args.reps,
        "seconds": {name: [round(v, 3) for v in values] for name, values in timings.items()},
        "median_seconds": {name: round(v, 3) for name, v in medians.items()},
        "ratio_vs_shell": {name: round(v / medians["shell"], 3) for name, v in medians.items()},
        "output_bytes": sizes,
        "vsaimage_peak_rss_mib": [round(p, 1) for p in peaks],
        "vsaimage": {"levels": archive.LEVELS, "zstd_threads": 0},
        "shell_pipeline": f"unmkinitramfs; {SHELL_PACK}",
        "3cpio": _three_cpio_note(),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "libarchive": ffi.version_number(),
            "zstd": _version(["zstd", "--version"]),
            "cpio": _version(["cpio", "--version"]),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "initrd.json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = "\n".join(
        f"| {name} | {medians[name]:.2f} | {min(timings[name]):.2f} | {max(timings[name]):.2f} "
        f"| {doc['ratio_vs_shell'][name]:.2f} | {sizes[name]:,} |"
        for name in timings)
    md = f"""# Initrd repack benchmark

Input: `{doc['initrd']}` ({input_bytes:,} bytes zstd, {doc['entries']} entries after
the repack), {args.reps} interleaved repetitions on {doc['machine']['cpus']} CPUs.
vsaimage: `vsaimage initrd` in a subprocess (interpreter start included):
libarchive read and newc write streamed entry by entry in the input's order,
zstd level {archive.LEVELS['zstd']} in the repack's own thread. Its peak RSS: {max(peaks):.0f} MiB
(the streaming repack holds no file data beyond a 64 KiB buffer, and zstd
one window and its tables, whatever the initrd's size). Shell: `unmkinitramfs`
then `{SHELL_PACK}`. 3cpio: {doc['3cpio']}.

| tool | median s | min s | max s | median / shell | output bytes |
|---|---|---|---|---|---|
{rows}

Load average at the end of the run: {doc['machine']['load_average_at_end']} (other
work on the machine makes absolute times noisy; the ratio is what to read).
"""
    (RESULTS / "initrd.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
