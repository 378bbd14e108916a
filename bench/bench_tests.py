"""The test suite's wall time, its CPU time and its ten slowest tests, as
`make test` runs it (ruff, mypy, lint-imports, then pytest).

    python -m bench.bench_tests [PYTEST ARGS...]

Extra arguments go to pytest instead of the whole suite (a few test files,
to check this script quickly). Writes bench/results/tests.json (every test's
setup, call and teardown times, the wall and CPU seconds of each part, the
machine's load, and what pytest's emulated machines cost: the appliances'
and the Xen harness's QEMUs, sampled by bench/qemucpu.py) and
bench/results/tests.md.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench import qemucpu

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
# pytest's --durations lines: "12.34s call     tests/test_x.py::test_y[param]"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s (setup|call|teardown) +(\S.*)$")
# its last line: "= 3 failed, 250 passed in 870.12s (0:14:30) =" (no "=" with -q)
_SUMMARY = re.compile(r"^=* ?(\d+ (?:passed|failed|error|skipped|deselected).*) in [\d.]+s")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall and CPU seconds (the command and every descendant it waited for:
    the appliances' and the Xen harness's QEMUs included)."""
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, _children_cpu() - cpu, proc


def main(argv: list[str] | None = None) -> int:
    selection = sys.argv[1:] if argv is None else argv
    load_start = [round(x, 2) for x in os.getloadavg()]
    parts = {
        "ruff": [str(BIN / "ruff"), "check", "vsaimage", "tests", "bench", "fixtures"],
        "mypy": [str(BIN / "mypy")],
        "lint-imports": [str(BIN / "lint-imports")],
        # --durations=0: every phase of every test (pytest hides those under
        # 5 ms unless -vv)
        "pytest": [str(BIN / "pytest"), "-q", "--durations=0", *selection],
    }
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    codes: dict[str, int] = {}
    stdout: dict[str, str] = {}
    with qemucpu.sampled() as machines:  # only pytest starts any
        for name, cmd in parts.items():
            wall[name], cpu[name], proc = _timed(cmd)
            codes[name] = proc.returncode
            stdout[name] = proc.stdout
            if proc.returncode != 0:  # what failed and why, without the durations
                said = [line for line in proc.stdout.splitlines() if not _DURATION.match(line)]
                print(f"--- {name} exited {proc.returncode}", *said, proc.stderr, sep="\n", file=sys.stderr)
    lines = stdout["pytest"].splitlines()
    durations = [{"seconds": float(m[1]), "phase": m[2], "test": m[3]}
                 for m in map(_DURATION.match, lines) if m]
    per_test: dict[str, float] = {}
    for d in durations:
        per_test[d["test"]] = round(per_test.get(d["test"], 0.0) + d["seconds"], 2)
    slowest = sorted(durations, key=lambda d: -d["seconds"])[:10]
    summary = next((m[1] for m in map(_SUMMARY.match, reversed(lines)) if m), "no summary")
    total = sum(wall.values())
    doc = {
        "selection": selection or ["(the whole suite)"],
        "seconds": {**{k: round(v, 1) for k, v in wall.items()}, "total": round(total, 1)},
        "cpu_seconds": {k: round(v, 1) for k, v in cpu.items()},
        "exit": codes,
        "summary": summary,
        "slowest": slowest,
        "cpus": os.cpu_count(),
        "load_average_at_start": load_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "qemu": {"by_kind": machines.totals(), "by_module": machines.by_module()},
        "per_test_seconds": dict(sorted(per_test.items(), key=lambda kv: -kv[1])),
        "durations": durations,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tests.json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = "\n".join(f"| {s['seconds']:.1f} | {s['phase']} | `{s['test']}` |" for s in slowest)
    kinds = machines.totals()
    emulated = sum(k["cpu_seconds"] for k in kinds.values())
    kind_rows = "\n".join(f"| {name} | {k['machines']:.0f} | {k['cpu_seconds']:.0f} |"
                          for name, k in sorted(kinds.items()))
    module_rows = "\n".join(f"| `{name}` | {m['machines']:.0f} | {m['cpu_seconds']:.0f} |"
                            for name, m in list(machines.by_module().items())[:10])
    md = f"""# Test suite time

`{' '.join(doc['selection'])}` on {doc['cpus']} CPUs: {total / 60:.1f} min in all
(ruff {wall['ruff']:.1f} s, mypy {wall['mypy']:.1f} s, lint-imports {wall['lint-imports']:.1f} s,
pytest {wall['pytest']:.1f} s wall, {cpu['pytest']:.0f} CPU s); pytest: {summary}.
Load average (1, 5, 15 min) at the start {load_start}, at the end {doc['load_average_at_end']}.
Every test's times are in tests.json.

| s | phase | slowest tests |
|---|---|---|
{rows}

## The emulated machines

pytest's QEMUs, sampled from /proc (bench/qemucpu.py; the figures err low):
{emulated:.0f} CPU s of pytest's {cpu['pytest']:.0f}. On {doc['cpus']} CPUs they alone take at
least {emulated / (doc['cpus'] or 1) / 60:.1f} min of wall time.

| kind | machines | CPU s |
|---|---|---|
{kind_rows}

| test module | machines started | their CPU s |
|---|---|---|
{module_rows}
"""
    (RESULTS / "tests.md").write_text(md)
    print(md)
    return max(codes.values())


if __name__ == "__main__":
    raise SystemExit(main())
