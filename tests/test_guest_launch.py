"""The KVM launch watchdog, on a guest made to hang whatever the machine's KVM
does: qemu started paused (-S) runs no guest code and says nothing on its
console, which is how a broken nested KVM hangs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from vsaimage import cancel
from vsaimage.guest import appliance as guest
from vsaimage.model import Drive

pytestmark = pytest.mark.integration

SILENCE = 2.0


@pytest.fixture
def paused_qemu(tmp_path: Path) -> tuple[Path, Path]:
    """A hypervisor for libguestfs (set_hv) that starts the appliance (the run
    given -kernel) paused and notes when; its probes of qemu run as usual."""
    started = tmp_path / "started"
    hv = tmp_path / "qemu-paused"
    hv.write_text(f"""#!/bin/sh
case " $* " in
*" -kernel "*) date +%s.%N > {started}; exec qemu-system-x86_64 -S "$@" ;;
esac
exec qemu-system-x86_64 "$@"
""")
    hv.chmod(0o755)
    return hv, started


def test_a_silent_kvm_launch_is_killed_after_the_silence(
        paused_qemu: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    hv, started = paused_qemu
    monkeypatch.setattr(guest, "KVM_SILENCE", SILENCE)
    g = guest._new_handle([Drive("/dev/null", readonly=True)], tcg=True)
    g.set_hv(str(hv))
    backstop = threading.Timer(SILENCE + 30, cancel.kill_qemu_children)  # fail, not hang
    backstop.start()
    try:
        with pytest.raises(RuntimeError):
            guest._launch(g, watch=True)
        killed = time.time()
    finally:
        backstop.cancel()
        g.close()
    assert started.is_file(), "the appliance's qemu never ran"
    silent = killed - float(started.read_text())
    # The watchdog looks twice a second: it may count from half a second early.
    assert SILENCE - 0.5 <= silent < SILENCE + 3, f"killed {silent:.1f} s after qemu started"
