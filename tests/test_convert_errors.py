"""convert's refusals: each a one-line error naming the file or step, exit 2,
and nothing left under the output names."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.build_image import LHN_FUNCTIONS, build_image
from support import NOBODY, DebianKernel, Run, head, nobody_dir, run_cli

pytestmark = pytest.mark.integration


def assert_refused(r: Run, *needles: str) -> None:
    assert r.code == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("vsaimage: error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


def leftovers(d: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name not in keep)


@pytest.fixture(scope="module")
def workdir() -> Path:
    d = nobody_dir() / "errors"
    d.mkdir()
    d.chmod(0o777)
    return d


def convert(src: Path, out: Path, k: DebianKernel, *extra: str | Path, user: int | None = None) -> Run:
    return run_cli("convert", src, "--kernel", k.vmlinuz, "--initrd", k.initrd, "-o", out, *extra,
                   user=user)


def test_missing_file_names_it_and_the_skip(workdir: Path, debian_kernel: DebianKernel) -> None:
    src = build_image(workdir / "no-lhn.img", root_changes={LHN_FUNCTIONS: None})
    r = convert(src, workdir / "out.img", debian_kernel)
    assert_refused(r, LHN_FUNCTIONS, "--skip mobo-uuid")
    assert leftovers(workdir, {"no-lhn.img"}) == []

    # ... and the step it names can be skipped; the rest is applied.
    r = convert(src, workdir / "out.img", debian_kernel, "--skip", "mobo-uuid", "--modules", "minimal",
                "--json")
    assert r.code == 0, r.stderr
    statuses = {s["step"]: s["status"] for s in r.doc["steps"]}
    assert statuses.pop("mobo-uuid") == "skipped"
    assert statuses.pop("bootloader") == "skipped"  # --boot direct
    assert set(statuses.values()) == {"applied"}


def test_no_dmidecode_assignment(workdir: Path, debian_kernel: DebianKernel) -> None:
    src_text = (Path(__file__).resolve().parent.parent / "fixtures" / "vsa-root" /
                LHN_FUNCTIONS.lstrip("/")).read_text()
    broken = "\n".join(line for line in src_text.splitlines()
                       if not line.strip().startswith("moboUUID=`")) + "\n"
    assert broken != src_text
    src = build_image(workdir / "no-dmi.img", root_changes={LHN_FUNCTIONS: broken.encode()})
    r = convert(src, workdir / "out2.img", debian_kernel)
    assert_refused(r, LHN_FUNCTIONS, "didMotherboardChange")
    assert not (workdir / "out2.img").exists()


def test_dry_run_writes_nothing(example_image: Path, debian_kernel: DebianKernel, tmp_path: Path) -> None:
    r = convert(example_image, tmp_path / "out.img", debian_kernel, "--dry-run", "--json")
    assert r.code == 0, r.stderr
    assert r.doc["dry_run"] is True
    assert {s["step"]: s["status"] for s in r.doc["steps"] if s["status"] != "apply"} == {
        "bootloader": "skipped"}  # --boot direct
    assert list(tmp_path.iterdir()) == []


# --- refusals before any appliance launch (fast) ------------------------------


def test_output_directory_missing(example_image: Path, debian_kernel: DebianKernel, tmp_path: Path) -> None:
    r = convert(example_image, tmp_path / "nope" / "out.img", debian_kernel)
    assert_refused(r, "nope", "does not exist")


def test_output_directory_not_writable(example_image: Path, debian_kernel: DebianKernel) -> None:
    d = nobody_dir() / "readonly"
    d.mkdir()
    d.chmod(0o755)  # owned by root: nobody cannot write here
    src = nobody_dir() / "ro-src.img"
    src.write_bytes(head(example_image))
    src.chmod(0o644)
    r = convert(src, d / "out.img", debian_kernel, user=NOBODY)
    assert_refused(r, str(d), "not writable")


def test_existing_output_needs_force(example_image: Path, debian_kernel: DebianKernel,
                                     tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    out.write_bytes(b"precious")
    r = convert(example_image, out, debian_kernel)
    assert_refused(r, str(out), "already exists", "--force")
    assert out.read_bytes() == b"precious"


def test_output_equal_to_input(example_image: Path, debian_kernel: DebianKernel) -> None:
    r = convert(example_image, example_image, debian_kernel, "--force")
    assert_refused(r, "same file as input")


def test_kernel_of_zeros(example_image: Path, debian_kernel: DebianKernel, tmp_path: Path) -> None:
    k = tmp_path / "vmlinuz"
    k.write_bytes(bytes(65536))
    r = run_cli("convert", example_image, "--kernel", k, "--initrd", debian_kernel.initrd,
                "-o", tmp_path / "out.img")
    assert_refused(r, str(k), "bzImage")
    assert [p.name for p in tmp_path.iterdir()] == ["vmlinuz"]


def test_initrd_missing(example_image: Path, debian_kernel: DebianKernel, tmp_path: Path) -> None:
    r = run_cli("convert", example_image, "--kernel", debian_kernel.vmlinuz, "--initrd",
                tmp_path / "none.img", "-o", tmp_path / "out.img")
    assert_refused(r, "none.img", "no such file")


def test_initrd_that_is_no_initrd_is_refused_before_any_work(example_image: Path,
                                                            debian_kernel: DebianKernel,
                                                            tmp_path: Path) -> None:
    """Refused before the copy and the launch (the repack itself runs during
    the launch, and its error would come minutes later)."""
    hostname = tmp_path / "hostname"
    hostname.write_text("vsa1\n")
    r = run_cli("convert", example_image, "--kernel", debian_kernel.vmlinuz, "--initrd", hostname,
                "-o", tmp_path / "out.img")
    assert_refused(r, str(hostname), "not an initrd")
    assert "appliance launch" not in r.stderr and "copy" not in r.stderr, r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["hostname"]


def test_unknown_skip(example_image: Path, debian_kernel: DebianKernel, tmp_path: Path) -> None:
    r = convert(example_image, tmp_path / "out.img", debian_kernel, "--skip", "nonsense")
    assert_refused(r, "--skip nonsense")


def test_too_many_data_disks(example_image: Path, debian_kernel: DebianKernel, tmp_path: Path) -> None:
    disks = [a for i in range(8) for a in ("--data-disk", str(tmp_path / f"d{i}.img"))]
    r = convert(example_image, tmp_path / "out.img", debian_kernel, *disks)
    assert_refused(r, "8 --data-disk given: at most 7 (xvdc..xvdi")


@pytest.mark.parametrize(("flag", "value", "says"), [
    ("--memory", "0", "memory must be a positive integer"),
    ("--vcpus", "0", "vcpus must be a positive integer"),
    ("--bridge", "xen br0", "bad bridge name 'xen br0'"),
    ("--name", "vsa\nxen", "the domain name 'vsa\\nxen' contains a newline"),
])
def test_xl_settings_refused_before_any_work(flag: str, value: str, says: str, example_image: Path,
                                             debian_kernel: DebianKernel, tmp_path: Path) -> None:
    """A setting the xl config cannot take is refused before the copy and the
    launch, by a dry run as by a convert (both used to find out only when the
    config was written: the dry run said nothing, the convert failed at its
    end)."""
    out = tmp_path / "vsa-xen.img"
    for mode in ("--dry-run", "--force"):
        r = convert(example_image, out, debian_kernel, flag, value, mode)
        assert_refused(r, says)
        assert "appliance launch" not in r.stderr and "copy" not in r.stderr, r.stderr
        assert list(tmp_path.iterdir()) == [], mode
