"""Conversion benchmark: `vsaimage convert` against the least any
libguestfs-based converter can do (the floor) and against a hand-written
guestfish script (the peer).

    python -m bench.run [--reps N] [--quick]

Every figure comes from this one run; the variants are interleaved within each
repetition so that all of them see the same machine load, and the medians are
reported. Measured, on the example image (`fixtures.build_image`, stock layout):

- floor: `cp --sparse=always` of the input, then in one bare appliance (guestfs
  Python: add the copy, launch, mount the root, `tar_in` of the modules
  payload, sync, shutdown). The minimal payload is sent first into a separate
  directory, then the full one, each followed by a sync, so one launch gives
  both floors: copy + launch + that payload's tar_in + shutdown. That is the
  old floor of the full payload; the new one ("full, image") is the way
  convert sends the full tree: the payload as an ext2 image (built by
  vsaimage's own kmod/payload.py, untimed: convert builds it during the
  launch) attached read-only at the same launch, then mount, `cp_a`, sync,
  unmount (timed after the tar's copy is removed, untimed): copy + launch +
  that + shutdown;
- peer: bench/peer.sh (cp, one guestfish session with uploads of the edited
  files and tar-in of the payload, the initrd repacked with unmkinitramfs,
  cpio and zstd); its inputs are made beforehand by bench/prep.py, untimed;
- vsaimage: `convert --json` in a subprocess (bench/selfrss.py) that reports
  its own peak RSS, full and `--modules minimal`, initrd repack included;
- scaling: `convert --modules minimal` of the same content at 4 GiB and at
  64 GiB virtual size.

`--quick`: one repetition, and no full-modules variants (no 400 MB transfer).
Writes bench/results/convert.json and bench/results/convert.md.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import guestfs

from bench.prep import prepare
from fixtures.build_image import GiB, build_image, cached_image, layout_for
from vsaimage import __version__
from vsaimage.kmod import kernel
from vsaimage.kmod import payload as module_payload

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work" / "convert"
PEER = Path(__file__).resolve().parent / "peer.sh"

TARGET_FLOOR = {"full": 1.10, "minimal": 1.15}
# issue 28: the full convert against the old (tar_in) floor
TARGET_OLD_FLOOR_FULL = 0.6
TARGET_PEER = 0.9
TARGET_RSS_MIB = 150
TARGET_PLAN_VERIFY_S = 3.0
# The same content at two virtual sizes: time and memory must not follow it.
SCALING_SIZES = {"4 GiB": 4 * GiB, "64 GiB": 64 * GiB}


@dataclass(frozen=True)
class Inputs:
    image: Path
    kernel: Path
    initrd: Path
    version: str
    modules_dir: Path
    root_device: str
    prep: dict[str, Path]  # "full" / "minimal" -> bench/prep.py's output
    payload_bytes: dict[str, int]
    scaled: dict[str, Path]
    payload_image: Path | None  # the full payload as convert's ext2 image (None: --quick)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _rm_outputs(stem: Path) -> None:
    for suffix in (".img", ".initrd", ".cfg"):
        stem.with_name(stem.name + suffix).unlink(missing_ok=True)


def _floor(inp: Inputs, variants: list[str]) -> dict[str, float]:
    """Phase times of the floor; tar_in per payload variant."""
    copy = WORK / "floor.img"
    copy.unlink(missing_ok=True)
    t: dict[str, float] = {}
    start = time.perf_counter()
    subprocess.run(["cp", "--sparse=always", str(inp.image), str(copy)], check=True)
    t["copy"] = time.perf_counter() - start
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.add_drive_opts(str(copy), format="raw", readonly=False)
        if inp.payload_image is not None:
            g.add_drive_opts(str(inp.payload_image), format="raw", readonly=True)
        mark = time.perf_counter()
        g.launch()
        t["launch"] = time.perf_counter() - mark
        g.mount(inp.root_device, "/")
        for v in variants:
            where = f"/lib/modules/{inp.version}" + ("" if v == "full" else f"-{v}")
            mark = time.perf_counter()
            g.mkdir_p(where)
            g.tar_in(str(inp.prep[v] / "modules.tar"), where)
            g.sync()
            t[f"tar_in {v}"] = time.perf_counter() - mark
        if inp.payload_image is not None:
            where = f"/lib/modules/{inp.version}"
            g.rm_rf(where)
            g.sync()
            mark = time.perf_counter()
            g.mkdir_p(where)
            g.mkdir("/.payload")
            g.mount_ro("/dev/sdb", "/.payload")
            g.cp_a("/.payload/.", where)
            g.sync()
            g.umount("/.payload")
            g.rmdir("/.payload")
            t["image full"] = time.perf_counter() - mark
        mark = time.perf_counter()
        g.shutdown()
        t["shutdown"] = time.perf_counter() - mark
    finally:
        g.close()
        copy.unlink(missing_ok=True)
    return t


def _peer(inp: Inputs, variant: str) -> dict[str, float]:
    stem = WORK / "peer"
    _rm_outputs(stem)
    start = time.perf_counter()
    subprocess.run(["sh", str(PEER), str(inp.image), str(stem), str(inp.prep[variant]), str(inp.initrd)],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    _rm_outputs(stem)
    return {"wall": wall}


def _convert(inp: Inputs, image: Path, minimal: bool) -> dict[str, Any]:
    stem = WORK / "conv"
    _rm_outputs(stem)
    rss_file = WORK / "rss.json"
    rss_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.selfrss", "convert", str(image), "--kernel", str(inp.kernel),
           "--initrd", str(inp.initrd), "-o", f"{stem}.img", "--json", "-q"]
    if minimal:
        cmd += ["--modules", "minimal"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "BENCH_RSS_FILE": str(rss_file)})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"convert failed ({proc.returncode}): {proc.stderr.strip()}")
    doc = json.loads(proc.stdout)
    _rm_outputs(stem)
    return {"wall": wall, "timings": doc["timings"], "appliance_launches": doc["appliance_launches"],
            "maxrss_mib": json.loads(rss_file.read_text())["maxrss_kib"] / 1024}


def _initrd_alone(inp: Inputs) -> dict[str, Any]:
    """`vsaimage initrd` by itself: how much of convert's peak RSS is the repack."""
    rss_file = WORK / "rss-initrd.json"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bench.selfrss", "initrd", str(inp.initrd), "-o",
                    str(WORK / "alone.initrd"), "-q"], cwd=REPO, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "BENCH_RSS_FILE": str(rss_file)})
    wall = time.perf_counter() - start
    (WORK / "alone.initrd").unlink()
    return {"seconds": round(wall, 2),
            "peak_rss_mib": round(json.loads(rss_file.read_text())["maxrss_kib"] / 1024, 1)}


def _setup(quick: bool) -> Inputs:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    if not kernels:
        raise SystemExit("bench: no /boot/vmlinuz-* (make setup installs linux-image-amd64)")
    vmlinuz = kernels[-1]
    version = kernel.kernel_version(vmlinuz)
    # Package installs regenerate /boot/initrd.img-*: work on a copy.
    initrd = WORK / f"initrd.img-{version}"
    shutil.copyfile(Path("/boot") / f"initrd.img-{version}", initrd)
    image = cached_image("stock")
    stock = layout_for("stock")
    modules_dir = Path("/lib/modules") / version
    prep: dict[str, Path] = {}
    payload_bytes: dict[str, int] = {}
    for v in ("minimal",) if quick else ("minimal", "full"):
        prep[v] = WORK / f"prep-{v}"
        payload = prepare(prep[v], image=image, root_offset=stock.root.start, version=version,
                          modules_dir=modules_dir, minimal=v == "minimal", kernel=vmlinuz)
        payload_bytes[v] = (prep[v] / "modules.tar").stat().st_size
        print(f"prepared {v}: {payload.files} files, {payload_bytes[v] / 2**20:.0f} MiB tar", flush=True)
    scaled = {}
    for label, size in SCALING_SIZES.items():
        scaled[label] = build_image(WORK / f"vsa-{size // GiB}g.img", layout="stock", size=size)
    payload_image = None
    if not quick:
        payload_image = WORK / "modules.img"
        with payload_image.open("wb") as f:
            f.truncate(module_payload.image_size(modules_dir))
        module_payload.build_image(modules_dir, version, payload_image)
    return Inputs(image, vmlinuz, initrd, version, modules_dir, f"/dev/sda{stock.root_part}",
                  prep, payload_bytes, scaled, payload_image)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _phase_medians(samples: list[dict[str, Any]]) -> dict[str, float]:
    names = list(dict.fromkeys(k for s in samples for k in s["timings"]))
    out = {n: round(_median([s["timings"].get(n, 0.0) for s in samples]), 2) for n in names}
    # What no phase covers: interpreter start, appliance shutdown, writing the
    # initrd and config, renames. Parallel phases (the initrd read and the
    # modules payload during the launch, the initrd repack during the edits
    # and verify) are not subtracted.
    serial = ("copy", "appliance launch", "plan", "edits", "modules transfer", "verify")
    out["rest (start-up, shutdown, writes)"] = round(_median(
        [s["wall"] - sum(s["timings"].get(n, 0.0) for n in serial) for s in samples]), 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="one repetition, no full-modules variants")
    args = parser.parse_args(argv)
    reps = 1 if args.quick else args.reps
    os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
    load_start = _load()
    started = time.time()
    inp = _setup(args.quick)
    variants = ["minimal"] if args.quick else ["minimal", "full"]

    floors: list[dict[str, float]] = []
    peers: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    converts: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    scaling: dict[str, list[dict[str, Any]]] = {k: [] for k in SCALING_SIZES}
    loads: list[dict[str, Any]] = []

    def timed(rep: int, name: str, fn: Callable[[], Any]) -> Any:
        loads.append({"rep": rep + 1, "run": name, "load_at_start": _load()})
        result = fn()
        wall = result.get("wall") or sum(result.values())
        loads[-1]["seconds"] = round(wall, 2)
        print(f"rep {rep + 1}/{reps} {name}: {wall:.1f} s (load {loads[-1]['load_at_start'][0]})",
              flush=True)
        return result

    for rep in range(reps):
        floors.append(timed(rep, "floor", lambda: _floor(inp, variants)))
        for v in reversed(variants):  # full first: the long ones while the machine is fresh
            peers[v].append(timed(rep, f"peer {v}", lambda v=v: _peer(inp, v)))
            converts[v].append(timed(rep, f"vsaimage {v}",
                                     lambda v=v: _convert(inp, inp.image, v == "minimal")))
        for label, image in inp.scaled.items():
            scaling[label].append(timed(rep, f"vsaimage minimal {label}",
                                        lambda image=image: _convert(inp, image, True)))

    initrd_alone = _initrd_alone(inp)
    floor_totals = {v: [f["copy"] + f["launch"] + f[f"tar_in {v}"] + f["shutdown"] for f in floors]
                    for v in variants}
    if "full" in variants:
        floor_totals["full, image"] = [f["copy"] + f["launch"] + f["image full"] + f["shutdown"]
                                       for f in floors]
    doc = _document(args, reps, inp, variants, floors, floor_totals, peers, converts, scaling, loads,
                    load_start, started)
    doc["initrd_repack_alone"] = initrd_alone
    shutil.rmtree(WORK, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "convert.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = _markdown(doc)
    (RESULTS / "convert.md").write_text(md)
    print(md)
    return 0


def _plan_verify(samples: list[dict[str, Any]]) -> float:
    """Median of the plan and verify phases together (guest work the floor
    does not do)."""
    return _median([c["timings"].get("plan", 0.0) + c["timings"].get("verify", 0.0) for c in samples])


def _stats(values: list[float]) -> dict[str, Any]:
    return {"median": round(_median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "all": [round(v, 2) for v in values]}


def _document(args: argparse.Namespace, reps: int, inp: Inputs, variants: list[str],
              floors: list[dict[str, float]], floor_totals: dict[str, list[float]],
              peers: dict[str, list[dict[str, float]]], converts: dict[str, list[dict[str, Any]]],
              scaling: dict[str, list[dict[str, Any]]], loads: list[dict[str, Any]],
              load_start: list[float], started: float) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    for v in variants:
        conv = [c["wall"] for c in converts[v]]
        rows[f"floor {v}"] = _stats(floor_totals[v])
        rows[f"peer {v}"] = _stats([p["wall"] for p in peers[v]])
        rows[f"vsaimage {v}"] = {**_stats(conv),
                                 "peak_rss_mib": round(max(c["maxrss_mib"] for c in converts[v]), 1),
                                 "appliance_launches": sorted({c["appliance_launches"] for c in converts[v]}),
                                 "phase_medians": _phase_medians(converts[v])}
        ratios[v] = {
            "convert/floor": round(_median(conv) / _median(floor_totals[v]), 3),
            "convert/peer": round(_median(conv) / _median([p["wall"] for p in peers[v]]), 3),
        }
    if "full, image" in floor_totals:
        conv = [c["wall"] for c in converts["full"]]
        rows["floor full, image"] = _stats(floor_totals["full, image"])
        ratios["full"]["convert/new floor"] = round(_median(conv) / _median(floor_totals["full, image"]), 3)
        ratios["full"]["new floor/old floor"] = round(
            _median(floor_totals["full, image"]) / _median(floor_totals["full"]), 3)
    scale_rows = {label: {**_stats([c["wall"] for c in samples]),
                          "peak_rss_mib": round(max(c["maxrss_mib"] for c in samples), 1),
                          "phase_medians": _phase_medians(samples)}
                  for label, samples in scaling.items()}
    rss = [c["maxrss_mib"] for s in (*converts.values(), *scaling.values()) for c in s]
    small, big = (scale_rows[k] for k in SCALING_SIZES)
    targets = {
        **{f"convert/floor {v} <= {TARGET_FLOOR[v]}": ratios[v]["convert/floor"] <= TARGET_FLOOR[v]
           for v in variants},
        **{f"plan + verify {v} <= {TARGET_PLAN_VERIFY_S} s": _plan_verify(converts[v]) <= TARGET_PLAN_VERIFY_S
           for v in variants},
        **{f"convert/peer {v} <= {TARGET_PEER}": ratios[v]["convert/peer"] <= TARGET_PEER
           for v in variants},
        **({f"convert/floor full (old floor, tar_in) <= {TARGET_OLD_FLOOR_FULL}":
            ratios["full"]["convert/floor"] <= TARGET_OLD_FLOOR_FULL} if "full" in ratios else {}),
        f"peak RSS < {TARGET_RSS_MIB} MiB (every convert, both sizes)": max(rss) < TARGET_RSS_MIB,
    }
    return {
        "benchmark": "convert",
        "tool_version": __version__,
        "repetitions": reps,
        "quick": args.quick,
        "input": {"layout": "stock", "virtual_bytes": inp.image.stat().st_size,
                  "allocated_bytes": inp.image.stat().st_blocks * 512},
        "kernel_version": inp.version,
        "payload_bytes": inp.payload_bytes,
        "seconds": rows,
        "floor_phases": {k: _stats([f[k] for f in floors]) for k in floors[0]},
        "ratios": ratios,
        "scaling": {
            "what": "convert --modules minimal, same content, extended partition to the end of the disk",
            "sizes": scale_rows,
            "time_ratio_64_over_4": round(big["median"] / small["median"], 3),
            "rss_delta_mib": round(big["peak_rss_mib"] - small["peak_rss_mib"], 1),
        },
        "targets": targets,
        "runs": loads,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_start,
            "load_average_at_end": _load(),
            "duration_s": round(time.time() - started),
            "python": platform.python_version(),
            "libguestfs": _libguestfs_version(),
            "backend_settings": os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", ""),
        },
    }


def _libguestfs_version() -> str:
    g = guestfs.GuestFS()
    try:
        v = g.version()
        return f"{v['major']}.{v['minor']}.{v['release']}"
    finally:
        g.close()


def _markdown(doc: dict[str, Any]) -> str:
    secs, m = doc["seconds"], doc["machine"]
    lines = ["| run | median s | min s | max s | / floor | / peer | peak RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    variants = [v for v in ("full", "minimal") if f"vsaimage {v}" in secs]
    for v in variants:
        floor, peer = secs[f"floor {v}"]["median"], secs[f"peer {v}"]["median"]
        names = [f"floor {v}", *(["floor full, image"] if v == "full" else []), f"peer {v}", f"vsaimage {v}"]
        for name in names:
            r = secs[name]
            rss = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else "–"
            lines.append(f"| {name} | {r['median']:.1f} | {r['min']:.1f} | {r['max']:.1f} "
                         f"| {r['median'] / floor:.2f} | {r['median'] / peer:.2f} | {rss} |")
    for label, r in doc["scaling"]["sizes"].items():
        lines.append(f"| vsaimage minimal, {label} | {r['median']:.1f} | {r['min']:.1f} | {r['max']:.1f} "
                     f"| – | – | {r['peak_rss_mib']:.0f} |")
    if "full" in doc["ratios"] and "convert/new floor" in doc["ratios"]["full"]:
        r = doc["ratios"]["full"]
        lines += ["", f"vsaimage full against the new floor (full, image): {r['convert/new floor']:.2f}; "
                  f"the new floor is {r['new floor/old floor']:.2f} of the old (tar_in) one."]
    table = "\n".join(lines)
    target_lines = "\n".join(f"- {'met' if ok else 'MISSED'}: {name}" for name, ok in doc["targets"].items())
    phases = []
    for v in variants:
        pm = secs[f"vsaimage {v}"]["phase_medians"]
        phases.append(f"- vsaimage {v}: " + ", ".join(f"{k} {s:.1f}" for k, s in pm.items()))
    fp = {k: s["median"] for k, s in doc["floor_phases"].items()}
    phases.append("- floor (one launch): " + ", ".join(f"{k} {s:.1f}" for k, s in fp.items()))
    for v in variants:
        pm = secs[f"vsaimage {v}"]["phase_medians"]
        extra = sum(pm.get(k, 0.0) for k in ("plan", "edits", "verify"))
        phases.append(
            f"- {v}, compared with the floor: launch {pm.get('appliance launch', 0):.1f} s against "
            f"{fp['launch']:.1f} s (the initrd read, {pm.get('initrd read', 0):.1f} s, and the payload "
            f"build run on the same CPUs as the emulated appliance); guest work the floor does not do "
            f"(plan, edits, verify, beside the initrd repack, {pm.get('initrd repack', 0):.1f} s) "
            f"{extra:.1f} s; transfer {pm.get('modules transfer', 0):.1f} s against "
            f"{fp[f'tar_in {v}']:.1f} s; the rest {pm['rest (start-up, shutdown, writes)']:.1f} s "
            f"against the floor's shutdown {fp['shutdown']:.1f} s.")
    alone = doc.get("initrd_repack_alone")
    if alone:
        phases.append(f"- memory: `vsaimage initrd` alone peaks at {alone['peak_rss_mib']:.0f} MiB "
                      f"(the repack streams, and zstd compresses in its thread: see streaming.md "
                      f"and initrd.md); that is most of convert's peak, and it does not depend on "
                      f"the disk's size.")
    sc = doc["scaling"]
    payload = ", ".join(f"{v} {b / 2**20:.0f} MiB" for v, b in doc["payload_bytes"].items())
    return f"""# Conversion benchmark

`vsaimage convert` of the example image (stock layout, {doc['input']['virtual_bytes'] / GiB:.0f} GiB
virtual, {doc['input']['allocated_bytes'] / 2**20:.0f} MiB of data) with kernel {doc['kernel_version']}
(modules payload: {payload}), {doc['repetitions']} interleaved repetitions, medians; libguestfs
{m['libguestfs']} under TCG, {m['cpus']} CPUs. Load average (1, 5, 15 min) at the start
{m['load_average_at_start']}, at the end {m['load_average_at_end']}; each run's load is in
convert.json (`runs`).

- **floor**: `cp --sparse=always` + one bare appliance launch + `tar_in` of the
  payload into the mounted root + shutdown: the least a libguestfs converter does
  through the channel (the old floor, kept for comparison). **floor full, image**
  (the new floor of the full payload): the same with the payload as an ext2 image
  on a read-only drive, copied by `cp_a` inside the appliance, as convert does.
- **peer**: `bench/peer.sh`, a hand-written guestfish script doing the same
  writes (edited files prepared beforehand, untimed) and the initrd repack with
  unmkinitramfs, cpio and zstd; no checks.
- **vsaimage**: `convert --json`, initrd repack and verification included;
  peak RSS is the vsaimage process's own (not the appliance's qemu).

{table}

Targets:
{target_lines}

Where the time goes (median seconds per phase; initrd repack and modules
payload run during the launch):
{chr(10).join(phases)}

Scaling (same content, 4 → 64 GiB virtual): time ×{sc['time_ratio_64_over_4']:.2f},
peak RSS {sc['rss_delta_mib']:+.1f} MiB.
"""


if __name__ == "__main__":
    raise SystemExit(main())
