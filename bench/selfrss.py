"""Run the vsaimage command line in this process, then write this process's
own peak RSS to $BENCH_RSS_FILE.

    BENCH_RSS_FILE=rss.json python -m bench.selfrss convert IMG ...

The process's own high-water mark (VmHWM) counts this Python process only:
the appliance's qemu, which is a child of it, has its own (larger, fixed)
footprint and is not what scales with the input. Not getrusage's ru_maxrss,
which Linux carries over from the parent at exec: a big parent would show
as this process's peak.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from vsaimage.cli.main import main as cli_main


def main() -> int:
    code = cli_main(sys.argv[1:])
    out = os.environ.get("BENCH_RSS_FILE")
    if out:
        hwm = re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
        assert hwm is not None, "no VmHWM in /proc/self/status"
        peak_kib = int(hwm[1])
        Path(out).write_text(json.dumps({"exit": code, "maxrss_kib": peak_kib}))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
