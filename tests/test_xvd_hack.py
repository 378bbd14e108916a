"""Edit 3: the converted image's xvd-hack.sh, run by the host's sh and by
busybox for every disk name of the table and for names outside it. (Under
Xen, tests/test_xen_boot.py sees udev run it in the guest.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from support import Readback

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = REPO / ".cache" / "busybox-static" / "bin" / "busybox"

# DESIGN.md, edit 3: disk -> (host, target).
TABLE = {"xvda": (0, 0), "xvdb": (0, 2), "xvdc": (1, 0), "xvdd": (1, 1), "xvde": (1, 2),
         "xvdf": (1, 3), "xvdg": (1, 4)}
PARTITIONS = ("1", "2", "5", "9", "12", "15")
OUTSIDE = ("xvdh", "xvdh1", "xvdz", "xvdaa", "xvdab1", "xvd", "xvda0", "xvda01", "xvda1a",
           "sda", "sda1", "hda", "vda5", "XVDA", "xvda/1", "")


def expected_name(name: str) -> str | None:
    m = re.fullmatch(r"(xvd[a-g])([1-9][0-9]*)?", name)
    if not m:
        return None
    host, target = TABLE[m.group(1)]
    tail = "disc" if m.group(2) is None else f"part{m.group(2)}"
    return f"host{host}/bus0/target{target}/lun0/{tail}"


def shells() -> list[list[str]]:
    return [["sh"]] + ([[str(BUSYBOX), "sh"]] if BUSYBOX.exists() else [])


@pytest.mark.parametrize("shell", shells(), ids=lambda s: Path(s[0]).name)
def test_converted_xvd_hack_script(readback: Readback, tmp_path: Path, shell: list[str]) -> None:
    data = readback.files["/etc/udev/scripts/xvd-hack.sh"]
    assert data is not None and readback.modes["/etc/udev/scripts/xvd-hack.sh"] == 0o755
    script = tmp_path / "xvd-hack.sh"
    script.write_bytes(data)
    names = [*TABLE, *(d + p for d in TABLE for p in PARTITIONS), *OUTSIDE]
    assert expected_name("xvdc12") == "host1/bus0/target0/lun0/part12"
    for name in names:
        done = subprocess.run([*shell, str(script), name], capture_output=True, text=True,
                              timeout=30)
        want = expected_name(name)
        if want is None:
            assert (done.returncode, done.stdout) == (1, ""), name
        else:
            assert (done.returncode, done.stdout) == (0, want + "\n"), name
