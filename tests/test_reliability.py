"""A convert that dies half-way: SIGKILL at several points, SIGINT, an output
filesystem that fills up. Whatever happens, the input keeps its hash, nothing
appears under the final output names, and what a SIGKILL leaves (at most the
`.NAME.<pid>.partial` temporaries) is removed by the next run.

vsaimage runs in its own session so that the test can find, and finally kill,
every process of that run (the appliance's qemu is a child of vsaimage and
may outlive it for a moment after a SIGKILL)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import VSAIMAGE, DebianKernel, fingerprint, nobody_dir
from vsaimage.outputs.staging import OutputPaths, clean_stale

NAMES = ("vsa-xen.img", "vsa-xen.initrd", "vsa-xen.cfg")


@dataclass(frozen=True)
class Source:
    path: Path
    sha: str


@pytest.fixture(scope="module")
def source(example_image: Path) -> Source:
    """A read-only copy of the example image and its hash before any run."""
    d = nobody_dir() / "reliability"
    d.mkdir(exist_ok=True)
    src = d / "vsa.img"
    if not src.exists():
        subprocess.run(["cp", "--sparse=always", str(example_image), str(src)], check=True)
        src.chmod(0o444)
    return Source(src, fingerprint(src))


def _group(pgid: int) -> list[tuple[int, str]]:
    """(pid, command name) of every process in the process group."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append((int(stat.parent.name), comm))
    return found


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)


def _sigint_default() -> None:
    """In the child: Ctrl-C's default action. A suite started in the
    background by a shell without job control has SIGINT ignored, which
    every child inherits, and Python then installs no Ctrl-C handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Convert:
    """A `vsaimage convert` running in its own session, stderr read line by line."""

    def __init__(self, src: Path, out_dir: Path, kernel: DebianKernel, tmp: Path, *extra: str) -> None:
        env = dict(os.environ)
        # The payload tarball and libguestfs's sockets go under `tmp`; the
        # appliance cache stays where it is (rebuilding it costs a minute).
        env["LIBGUESTFS_CACHEDIR"] = env.get("LIBGUESTFS_CACHEDIR") or env.get("TMPDIR") or "/var/tmp"
        env["TMPDIR"] = str(tmp)
        self.proc = subprocess.Popen(
            [str(VSAIMAGE), "convert", str(src), "--kernel", str(kernel.vmlinuz), "--initrd",
             str(kernel.initrd), "-o", str(out_dir / NAMES[0]), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=env, start_new_session=True, preexec_fn=_sigint_default)
        self.pid = self.proc.pid
        self.lines: list[str] = []

    def wait_for_line(self, text: str, timeout: float = 600) -> None:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        for line in self.proc.stderr:
            self.lines.append(line)
            if text in line:
                return
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s"
        raise AssertionError(f"exited ({self.proc.wait()}) before {text!r}:\n{''.join(self.lines)}")

    def wait_for(self, what: str, predicate: Callable[[], object], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None, f"exited ({self.proc.returncode}) before {what}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s"
            time.sleep(0.005)

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        try:
            _, err = self.proc.communicate(timeout=timeout)
        finally:
            _kill_group(self.pid)
        return self.proc.returncode, "".join(self.lines) + (err or "")


@pytest.fixture
def run_dirs(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir()
    tmp.mkdir()
    yield out, tmp
    shutil.rmtree(tmp, ignore_errors=True)


def _partials(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob(".*.partial"))


def assert_recovers_from_kill(out_dir: Path, source: Source, pid: int) -> None:
    """Input unchanged; nothing under the final names; at most temporaries of
    the killed process, which the next run's clean-up removes."""
    assert fingerprint(source.path) == source.sha, "the input was modified"
    left = sorted(p.name for p in out_dir.iterdir())
    assert not set(left) & set(NAMES), f"final output names exist: {left}"
    # the staged outputs, and scratch files such as the modules tarball
    pattern = re.compile(rf"^\.({'|'.join(map(re.escape, NAMES))})\.{pid}(\.[\w.-]+)?\.partial$")
    assert all(pattern.match(name) for name in left), left
    paths = OutputPaths.from_option(out_dir / NAMES[0])
    for final in paths.all():
        clean_stale(final)
    assert sorted(out_dir.iterdir()) == []


def _has_qemu(pgid: int) -> bool:
    return any(comm.startswith("qemu") for _, comm in _group(pgid))


@pytest.mark.integration
def test_sigkill_right_after_staging_appears(source: Source, debian_kernel: DebianKernel,
                                             run_dirs: tuple[Path, Path]) -> None:
    out, tmp = run_dirs
    c = Convert(source.path, out, debian_kernel, tmp, "--modules", "minimal", "-q")
    c.wait_for("the staging file", lambda: _partials(out), timeout=120)
    os.kill(c.pid, signal.SIGKILL)
    c.finish()
    assert_recovers_from_kill(out, source, c.pid)


@pytest.mark.integration
def test_sigkill_during_the_appliance_launch(source: Source, debian_kernel: DebianKernel,
                                            run_dirs: tuple[Path, Path]) -> None:
    out, tmp = run_dirs
    c = Convert(source.path, out, debian_kernel, tmp, "--modules", "minimal", "-q")
    c.wait_for("qemu", lambda: _has_qemu(c.pid), timeout=120)
    time.sleep(1)
    os.kill(c.pid, signal.SIGKILL)
    c.finish()
    assert_recovers_from_kill(out, source, c.pid)


@pytest.mark.integration
def test_sigkill_during_the_modules_transfer(source: Source, debian_kernel: DebianKernel,
                                            run_dirs: tuple[Path, Path]) -> None:
    out, tmp = run_dirs
    c = Convert(source.path, out, debian_kernel, tmp)  # the full modules tree: a long transfer
    c.wait_for_line("modules transfer: started")
    time.sleep(2)
    assert c.proc.poll() is None, "the transfer ended within 2 s: nothing was killed during it"
    os.kill(c.pid, signal.SIGKILL)
    c.finish()
    assert_recovers_from_kill(out, source, c.pid)


@pytest.mark.integration
def test_sigint_during_the_launch(source: Source, debian_kernel: DebianKernel,
                                  run_dirs: tuple[Path, Path]) -> None:
    out, tmp = run_dirs
    c = Convert(source.path, out, debian_kernel, tmp, "--modules", "minimal", "-q")
    c.wait_for("qemu", lambda: _has_qemu(c.pid), timeout=120)
    time.sleep(1)
    os.kill(c.pid, signal.SIGINT)
    start = time.monotonic()
    code, err = c.finish(timeout=60)
    assert code == 130, err
    assert time.monotonic() - start < 30, "Ctrl-C took more than 30 s to take effect"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vsaimage: error: interrupted"), err
    assert fingerprint(source.path) == source.sha
    assert sorted(out.iterdir()) == []


@pytest.mark.integration
def test_sigint_during_the_modules_transfer(source: Source, debian_kernel: DebianKernel,
                                            run_dirs: tuple[Path, Path]) -> None:
    out, tmp = run_dirs
    c = Convert(source.path, out, debian_kernel, tmp)
    c.wait_for_line("modules transfer: started")
    time.sleep(2)
    os.kill(c.pid, signal.SIGINT)
    start = time.monotonic()
    code, err = c.finish(timeout=300)
    assert code == 130, err
    assert time.monotonic() - start < 15, "Ctrl-C during the transfer waited for it to finish"
    assert sorted(out.iterdir()) == []


# --- an output filesystem that fills up --------------------------------------

def _unshare_prefix() -> list[str] | None:
    """A command prefix that runs its argument in a private mount namespace
    where the caller may mount a tmpfs, or None when the host forbids it."""
    prefix = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        prefix[1:1] = ["--user", "--map-root-user"]
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


def _convert_into_small_tmpfs(size: str, source: Source, kernel: DebianKernel, work: Path,
                              *extra: str, timeout: float) -> tuple[int, str, list[str]]:
    """Convert into a fresh tmpfs of `size`; returns the exit code, stderr and
    what was left in the tmpfs (listed before the namespace, and the tmpfs
    with it, goes away)."""
    prefix = _unshare_prefix()
    assert prefix is not None, "unshare cannot make a private mount namespace here (tests run as root)"
    mnt = work / "mnt"
    mnt.mkdir()
    script = (
        'mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; shift 2\n'
        '"$@" 2>"$WORK/stderr"; code=$?\n'
        'ls -A "$WORK/mnt" >"$WORK/left"\n'
        'exit $code\n'
    )
    cmd = [*prefix, "sh", "-c", script, "sh", size, str(mnt), str(VSAIMAGE), "convert", str(source.path),
           "--kernel", str(kernel.vmlinuz), "--initrd", str(kernel.initrd), "-o",
           str(mnt / NAMES[0]), "-q", *extra]
    proc = subprocess.Popen(cmd, cwd="/", env={**os.environ, "WORK": str(work)},
                            start_new_session=True)
    try:
        code = proc.wait(timeout=timeout)
    finally:
        _kill_group(proc.pid)
    assert code != 99, "mounting the tmpfs failed"
    return code, (work / "stderr").read_text(), (work / "left").read_text().split()


def test_output_filesystem_too_small_for_the_copy(source: Source, debian_kernel: DebianKernel,
                                                  tmp_path: Path) -> None:
    code, err, left = _convert_into_small_tmpfs("2m", source, debian_kernel, tmp_path,
                                                "--modules", "minimal", timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (1, 2), err
    assert len(lines) == 1 and lines[0].startswith("vsaimage: error:"), err
    assert "no space left" in lines[0], err
    assert left == []
    assert fingerprint(source.path) == source.sha


@pytest.mark.integration
def test_output_filesystem_full_at_the_initrd(source: Source, debian_kernel: DebianKernel,
                                              tmp_path: Path) -> None:
    """8 MiB holds the staged image and the edits, not the repacked initrd."""
    code, err, left = _convert_into_small_tmpfs("8m", source, debian_kernel, tmp_path,
                                                "--skip", "modules", timeout=600)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (1, 2), err
    assert len(lines) == 1 and lines[0].startswith("vsaimage: error:"), err
    assert "no space left" in lines[0], err
    assert left == []


@pytest.mark.integration
def test_output_filesystem_full_during_the_modules_transfer(source: Source, debian_kernel: DebianKernel,
                                                            tmp_path: Path) -> None:
    code, err, left = _convert_into_small_tmpfs("8m", source, debian_kernel, tmp_path, timeout=600)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code in (1, 2), err
    assert len(lines) == 1 and lines[0].startswith("vsaimage: error:"), err
    assert left == []
