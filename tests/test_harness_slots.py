"""The Xen harness's CPU slots: a run waits while the machine's runs hold
them all (no appliance, no Xen: a unit test of the lock)."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import pytest
from xenharness import run as harness


def test_a_run_waits_for_a_free_slot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # slots of this test only
    monkeypatch.setattr(harness, "slots", lambda: 1)
    events: list[str] = []

    def second() -> None:
        with harness.cpu_slot():
            events.append("second in")

    with harness.cpu_slot():
        other = threading.Thread(target=second)
        other.start()
        time.sleep(1.5)
        events.append("first out")
    other.join(10)
    assert events == ["first out", "second in"]
    assert list(tmp_path.glob("vsaimage-xen-*-slot-0.lock"))


def test_one_slot_per_two_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    for cpus, want in ((None, 1), (1, 1), (2, 1), (3, 1), (4, 2), (16, 8)):
        monkeypatch.setattr(harness.os, "cpu_count", lambda c=cpus: c)
        assert harness.slots() == want, cpus
