"""A domU's console as the Xen harness hands it to the checks: only what
the last attempt at creating it printed (no QEMU: a unit test of the cut)."""

from __future__ import annotations

from pathlib import Path

from xenharness import run as harness


def _run(tmp_path: Path, console: bytes) -> harness.Run:
    path = tmp_path / "pvh.console.log"
    path.write_bytes(console)
    return harness.Run(tmp_path, {}, 0, 1.0, {"pvh": path})


def test_a_console_created_once_is_whole(tmp_path: Path) -> None:
    run = _run(tmp_path, b"boot-report: begin\r\nboot-report: end\r\nvsa login: ")
    assert run.console("pvh") == "boot-report: begin\nboot-report: end\nvsa login: "


def test_an_attempt_created_again_hides_the_failed_ones(tmp_path: Path) -> None:
    # the first attempt crashed inside boot-report, mid-line; the marker
    # then follows on that line
    first = b"boot-report: begin\r\nboot-report: section act"
    again = harness.RETRY_MARK.encode()
    run = _run(tmp_path, first + again + b"hotplug lost\r\n" + again + b"boot-report: begin\r\nvsa login: ")
    assert run.console("pvh") == "boot-report: begin\nvsa login: "
