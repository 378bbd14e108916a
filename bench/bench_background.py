"""What host-side work costs the appliance: launch time alone and beside a
concurrent initrd repack, run the ways convert could run it.

    python -m bench.bench_background [--reps N]

Variants, interleaved within each repetition (so all see the same machine
load): a bare appliance launch (guestfs launch and shutdown of the example
image) with nothing else running, then the same while a subprocess repacks the
Debian initrd over and over (`initrd.repack`, zstd in one thread, at nice 0
or 10). Convert runs its host-side work (the initrd read and the modules
payload during the launch, the repack during the edits and verify) in
threads at the chosen nice value.
Writes bench/results/background.json and bench/results/background.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import guestfs

from fixtures.build_image import cached_image

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
REPACK_LOOP = """
import os, sys
from vsaimage.initrd import repack as initrd
os.setpriority(os.PRIO_PROCESS, 0, int(sys.argv[3]))
while True:
    with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as out:
        initrd.repack(src, out)
"""
# name -> the nice value of the concurrent repack; None: launch alone
VARIANTS: dict[str, int | None] = {
    "alone": None,
    "repack, nice 0": 0,
    "repack, nice 10": 10,
}


def _launch(image: Path) -> float:
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.add_drive_opts(str(image), format="raw", readonly=True)
        start = time.perf_counter()
        g.launch()
        took = time.perf_counter() - start
        g.shutdown()
    finally:
        g.close()
    return took


def _beside(image: Path, initrd: Path, work: Path, nice: int | None) -> float:
    if nice is None:
        return _launch(image)
    proc = subprocess.Popen([sys.executable, "-c", REPACK_LOOP, str(initrd), str(work / "out.initrd"),
                             str(nice)], cwd=REPO)
    try:
        time.sleep(0.5)  # the repack is under way when the launch starts
        return _launch(image)
    finally:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    sources = sorted(Path("/boot").glob("initrd.img-*"))
    if not sources:
        parser.error("no /boot/initrd.img-* to repack")
    image = cached_image("stock")
    launches: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        initrd = work / "initrd.img"
        shutil.copyfile(sources[-1], initrd)  # package installs regenerate /boot's
        for rep in range(args.reps):
            for name, nice in VARIANTS.items():
                launches[name].append(_beside(image, initrd, work, nice))
                print(f"rep {rep + 1}/{args.reps} {name}: {launches[name][-1]:.1f} s", flush=True)
    medians = {name: statistics.median(v) for name, v in launches.items()}
    doc = {
        "repetitions": args.reps,
        "launch_seconds": {name: [round(x, 2) for x in v] for name, v in launches.items()},
        "median_launch_seconds": {name: round(v, 2) for name, v in medians.items()},
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "backend_settings": os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", ""),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "background.json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = "\n".join(f"| {name} | {medians[name]:.1f} | {min(v):.1f} | {max(v):.1f} | "
                     f"{medians[name] - medians['alone']:+.1f} |" for name, v in launches.items())
    md = f"""# Appliance launch beside host-side work

{args.reps} interleaved repetitions on {doc['cpus']} CPUs, libguestfs backend settings
`{doc['backend_settings'] or 'default'}`; the concurrent work is an initrd repack looped in a
subprocess for the whole launch (more than convert ever runs beside it).

| variant | median launch s | min s | max s | vs alone s |
|---|---|---|---|---|
{rows}

Load average at the end: {doc['load_average_at_end']}.
"""
    (RESULTS / "background.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
