"""The test suite's wall time and its ten slowest tests, as `make test` runs
it (ruff, mypy, then pytest with --durations=10).

    python -m bench.bench_tests [PYTEST ARGS...]

Extra arguments go to pytest instead of the whole suite (a few test files,
to check this script quickly). Writes bench/results/tests.json and
bench/results/tests.md.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BIN = Path(sys.executable).parent
# pytest's --durations lines: "12.34s call     tests/test_x.py::test_y[param]"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s (setup|call|teardown) +(\S.*)$")
# its last line: "= 3 failed, 250 passed in 870.12s (0:14:30) =" (no "=" with -q)
_SUMMARY = re.compile(r"^=* ?(\d+ (?:passed|failed|error|skipped|deselected).*) in [\d.]+s")


def _timed(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, proc


def main(argv: list[str] | None = None) -> int:
    selection = sys.argv[1:] if argv is None else argv
    lint, ruff = _timed([str(BIN / "ruff"), "check", "vsaimage", "tests", "bench", "fixtures"])
    typing, mypy = _timed([str(BIN / "mypy")])
    tests, pytest = _timed([str(BIN / "pytest"), "-q", "--durations=10", *selection])
    lines = pytest.stdout.splitlines()
    slowest = [{"seconds": float(m[1]), "phase": m[2], "test": m[3]}
               for m in map(_DURATION.match, lines) if m]
    summary = next((m[1] for m in map(_SUMMARY.match, reversed(lines)) if m), "no summary")
    doc = {
        "selection": selection or ["(the whole suite)"],
        "seconds": {"ruff": round(lint, 1), "mypy": round(typing, 1), "pytest": round(tests, 1),
                    "total": round(lint + typing + tests, 1)},
        "exit": {"ruff": ruff.returncode, "mypy": mypy.returncode, "pytest": pytest.returncode},
        "summary": summary,
        "slowest": slowest,
        "cpus": os.cpu_count(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tests.json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = "\n".join(f"| {s['seconds']:.1f} | {s['phase']} | `{s['test']}` |" for s in slowest)
    md = f"""# Test suite time

`{' '.join(doc['selection'])}` on {doc['cpus']} CPUs: {doc['seconds']['total'] / 60:.1f} min in all
(ruff {doc['seconds']['ruff']} s, mypy {doc['seconds']['mypy']} s, pytest {doc['seconds']['pytest']} s);
pytest: {summary}. Load average at the end: {doc['load_average_at_end']}.

| s | phase | slowest tests |
|---|---|---|
{rows}
"""
    (RESULTS / "tests.md").write_text(md)
    print(md)
    return max(ruff.returncode, mypy.returncode, pytest.returncode)


if __name__ == "__main__":
    raise SystemExit(main())
