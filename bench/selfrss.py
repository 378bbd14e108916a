"""Run the vsaimage command line in this process, then write this process's
own peak RSS to $BENCH_RSS_FILE.

    BENCH_RSS_FILE=rss.json python -m bench.selfrss convert IMG ...

RUSAGE_SELF counts this Python process only: the appliance's qemu, which is a
child of it, has its own (larger, fixed) footprint and is not what scales with
the input.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

from vsaimage.cli.main import main as cli_main


def main() -> int:
    code = cli_main(sys.argv[1:])
    out = os.environ.get("BENCH_RSS_FILE")
    if out:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        Path(out).write_text(json.dumps({"exit": code, "maxrss_kib": peak_kib}))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
