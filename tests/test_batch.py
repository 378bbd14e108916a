"""Several images in one appliance launch: convert, --dry-run and verify.

The batch holds the example image, a variant of another layout recording
another MAC, a clone of the example, a truncated disk (a partition table
whose partitions lie beyond its end) and a text file: the first three are
converted, each with its own outputs and identity; the last two fail alone,
and the exit code and the JSON document say which and why. Its --initrd
lacks xen-blkfront and ext4: every image gets them, from one repack."""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_initrd_modules import REMOVED, initrd_without

from fixtures.build_image import build_image
from support import REPO, DebianKernel, Run, fingerprint, head, nobody_dir, run_cli
from vsaimage.cli.main import _batch_exit
from vsaimage.cli.render import Screen, show_batch, show_convert, show_verify
from xl_reader import parse as parse_xl

IFCFG = "/etc/sysconfig/network-scripts/ifcfg-eth0"
STOCK_MAC, OTHER_MAC = "00:50:56:9a:3c:11", "00:50:56:9a:3c:22"
CONVERTED = ("vsa1", "vsa2", "vsa3")


@dataclass(frozen=True)
class Batch:
    inputs: Path
    out: Path
    before: dict[str, str]  # fingerprints of the disk inputs
    run: Run


@pytest.fixture(scope="module")
def batch(example_image: Path, debian_kernel: DebianKernel,
          tmp_path_factory: pytest.TempPathFactory) -> Batch:
    d = nobody_dir() / "batch"
    d.mkdir()
    out = d / "out"
    out.mkdir()
    # The machine's initrd without xen-blkfront and ext4 (every root of the
    # batch is ext3): the repack started at the launch adds them while the
    # images are planned, each from the initrd as given.
    data, _ = initrd_without(debian_kernel, REMOVED)
    initrd_in = tmp_path_factory.mktemp("batch-initrd") / "initrd.img"
    initrd_in.write_bytes(data)
    for name in ("vsa1", "vsa3"):  # vsa3: a dd copy of vsa1, as a clone of one VSA is
        subprocess.run(["cp", "--sparse=always", str(example_image), str(d / f"{name}.img")], check=True)
    ifcfg = (REPO / "fixtures" / "vsa-root" / IFCFG.lstrip("/")).read_text()
    assert STOCK_MAC.upper() in ifcfg
    build_image(d / "vsa2.img", layout="alt",
                root_changes={IFCFG: ifcfg.replace(STOCK_MAC.upper(), OTHER_MAC.upper()).encode()})
    (d / "trunc.img").write_bytes(head(example_image))
    (d / "notes.img").write_text("not a disk\n" * 100)
    disks = ("vsa1", "vsa2", "vsa3", "trunc")
    for name in disks:
        (d / f"{name}.img").chmod(0o444)
    before = {name: fingerprint(d / f"{name}.img") for name in disks}
    r = run_cli("convert", *(d / f"{n}.img" for n in (*disks, "notes")), "--kernel", debian_kernel.vmlinuz,
                "--initrd", initrd_in, "-o", out, "--modules", "minimal", "--json")
    return Batch(d, out, before, r)


def images(b: Batch) -> dict[str, dict[str, object]]:
    return {Path(str(i["input"])).stem: i for i in b.run.doc["images"]}


@pytest.mark.integration
def test_every_image_gets_the_drivers_its_initrd_lacks(batch: Batch) -> None:
    """An initrd without xen-blkfront and ext4 (the batch's): the repack adds
    them in the background while the images after the first are planned,
    and those must still see the initrd as given (and get their drivers
    too)."""
    for name in CONVERTED:
        assert images(batch)[name]["success"] is True, batch.run.stderr
        listing = subprocess.run(["lsinitramfs", str(batch.out / f"{name}.initrd")], capture_output=True,
                                 text=True, check=True).stdout
        assert "/xen-blkfront.ko" in listing and "/ext4.ko" in listing, name


@pytest.mark.integration
def test_several_images_in_one_launch(batch: Batch) -> None:
    doc = batch.run.doc
    assert doc["batch"] is True and doc["appliance_launches"] == 1
    assert [Path(i["input"]).stem for i in doc["images"]] == [*CONVERTED[:2], CONVERTED[2], "trunc", "notes"]
    for name in CONVERTED:
        image = images(batch)[name]
        assert image["success"] is True, image
        steps = image["steps"]
        assert isinstance(steps, list)
        # --boot direct does not use the bootloader step
        assert {s["status"] for s in steps if s["step"] != "bootloader"} == {"applied"}, name
        assert image["outputs"] == {"image": str(batch.out / f"{name}.img"),
                                    "initrd": str(batch.out / f"{name}.initrd"),
                                    "cfg": str(batch.out / f"{name}.cfg"), "format": "raw",
                                    "system_disks": [str(batch.out / f"{name}.img")]}
    # one initrd repack and one modules payload for all: the same initrd each
    assert batch.run.stderr.count("initrd repack: started") == 1
    assert batch.run.stderr.count("modules payload: started") == 1
    assert batch.run.stderr.count("appliance launch: started") == 1
    initrds = {(batch.out / f"{name}.initrd").read_bytes() for name in CONVERTED}
    assert len(initrds) == 1


@pytest.mark.integration
def test_failed_images_fail_alone_and_say_why(batch: Batch) -> None:
    doc = batch.run.doc
    assert doc["success"] is False
    assert doc["failed"] == [str(batch.inputs / "trunc.img"), str(batch.inputs / "notes.img")]
    # both refused as bad input: exit 2
    assert batch.run.code == 2, batch.run.stderr
    trunc, notes = images(batch)["trunc"]["error"], images(batch)["notes"]["error"]
    assert isinstance(trunc, dict) and isinstance(notes, dict)
    assert (trunc["kind"], trunc["exit_code"]) == ("image", 2) and "no partitions found" in trunc["message"]
    assert (notes["kind"], notes["exit_code"]) == ("image", 2) and "no partition table" in notes["message"]
    errors = [line for line in batch.run.stderr.splitlines() if line.startswith("vsaimage: error:")]
    assert len(errors) == 2 and "Traceback" not in batch.run.stderr, batch.run.stderr
    assert any(str(batch.inputs / "trunc.img") in e and "no partitions" in e for e in errors)
    # nothing of theirs (or anyone's temporaries) is left
    assert sorted(p.name for p in batch.out.iterdir()) == sorted(
        f"{n}.{ext}" for n in CONVERTED for ext in ("img", "initrd", "cfg"))
    assert not list(batch.inputs.rglob("*.partial"))


@pytest.mark.integration
def test_inputs_untouched(batch: Batch) -> None:
    for name, before in batch.before.items():
        assert fingerprint(batch.inputs / f"{name}.img") == before, name


@pytest.mark.integration
def test_each_image_has_its_own_identity(batch: Batch) -> None:
    cfgs = {name: parse_xl((batch.out / f"{name}.cfg").read_text()) for name in CONVERTED}
    assert {n: c["name"] for n, c in cfgs.items()} == {n: n for n in CONVERTED}
    ramdisks = {n: c["ramdisk"] for n, c in cfgs.items()}
    assert ramdisks == {n: str(batch.out / f"{n}.initrd") for n in CONVERTED}
    assert {n: c["root"] for n, c in cfgs.items()} == {"vsa1": "/dev/xvda5", "vsa2": "/dev/xvda6",
                                                       "vsa3": "/dev/xvda5"}
    for n, c in cfgs.items():
        disk = c["disk"]
        assert isinstance(disk, list) and str(batch.out / f"{n}.img") in disk[0]
    # each keeps the MAC it records; the other layout has its own root UUID
    macs = {n: str(c["vif"][0]).split("mac=")[1].split(",")[0] for n, c in cfgs.items()}
    assert macs == {"vsa1": STOCK_MAC, "vsa2": OTHER_MAC, "vsa3": STOCK_MAC}
    assert cfgs["vsa1"]["uuid"] != cfgs["vsa2"]["uuid"]
    # a clone records the same identity: the batch says so
    shared = [w for w in batch.run.doc["warnings"] if "vsa1.img and " in w and "vsa3.img" in w]
    assert len(shared) == 2 and any(STOCK_MAC in w for w in shared), batch.run.doc["warnings"]


@pytest.mark.integration
def test_verify_several_in_one_launch(batch: Batch, debian_kernel: DebianKernel) -> None:
    r = run_cli("verify", batch.out / "vsa1.img", batch.out / "vsa2.img", batch.inputs / "vsa1.img",
                "--initrd", batch.out / "vsa1.initrd", "--json")
    assert r.code == 1, r.stderr  # the unconverted input is not converted: a failure, not bad input
    doc = r.doc
    assert doc["appliance_launches"] == 1
    assert doc["failed"] == [str(batch.inputs / "vsa1.img")]
    missing = {i["input"]: i["missing"] for i in doc["images"]}
    assert missing == {str(batch.out / "vsa1.img"): [], str(batch.out / "vsa2.img"): [],
                       str(batch.inputs / "vsa1.img"): missing[str(batch.inputs / "vsa1.img")]}
    assert "mobo-uuid" in missing[str(batch.inputs / "vsa1.img")]


@pytest.mark.integration
def test_dry_run_several(batch: Batch, debian_kernel: DebianKernel, tmp_path: Path) -> None:
    r = run_cli("convert", batch.inputs / "vsa1.img", batch.inputs / "vsa2.img", "--kernel",
                debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd, "-o", tmp_path, "--dry-run",
                "--json")
    assert r.code == 0, r.stderr
    assert r.doc["dry_run"] is True and r.doc["appliance_launches"] == 1
    for image in r.doc["images"]:
        stem = Path(image["input"]).stem
        assert image["output_files"] == [str(tmp_path / f"{stem}.{ext}") for ext in ("img", "initrd", "cfg")]
        assert {s["status"] for s in image["steps"] if s["step"] != "bootloader"} == {"apply"}
    assert list(tmp_path.iterdir()) == []


# --- refused before any launch ------------------------------------------------


def disk(path: Path) -> Path:
    """A file that passes the command line's checks (an MBR signature)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(510) + b"\x55\xaa" + bytes(2**20 - 512))
    return path


@pytest.mark.parametrize("extra", [("--mac", "00:16:3e:0a:bb:cc"), ("--name", "vsa"),
                                   ("--data-disk", "data.img")])
def test_one_identity_for_several_refused(extra: tuple[str, str], tmp_path: Path) -> None:
    a, b = disk(tmp_path / "a.img"), disk(tmp_path / "b.img")
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli("convert", a, b, "--kernel", tmp_path / "k", "--initrd", tmp_path / "i", "-o", out, *extra)
    assert r.code == 2 and f"{extra[0]} with several images" in r.stderr, r.stderr
    assert list(out.iterdir()) == []


def test_several_images_need_a_directory(tmp_path: Path) -> None:
    a, b = disk(tmp_path / "a.img"), disk(tmp_path / "b.img")
    r = run_cli("convert", a, b, "--kernel", tmp_path / "k", "--initrd", tmp_path / "i",
                "-o", tmp_path / "x.img")
    assert r.code == 2 and "existing directory" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.img", "b.img"]


def test_two_inputs_of_one_name_refused(tmp_path: Path) -> None:
    a, b = disk(tmp_path / "x" / "vsa.img"), disk(tmp_path / "y" / "vsa.img")
    r = run_cli("convert", a, b, "--kernel", tmp_path / "k", "--initrd", tmp_path / "i", "-o", tmp_path)
    assert r.code == 2 and str(a) in r.stderr and str(b) in r.stderr, r.stderr


@pytest.mark.parametrize(("codes", "expected"), [((), 0), ((2, 2), 2), ((2, 1), 1), ((None,), 1)])
def test_batch_exit_code(codes: tuple[int | None, ...], expected: int) -> None:
    """2 only when every failure was bad input; an image verify finds not
    converted (no error) is a failure."""
    docs = [{"success": True}] + [{"success": False, **({"error": {"exit_code": c}} if c else {})}
                                  for c in codes]
    assert _batch_exit({"images": docs}) == expected


def test_batch_table_names_each_image() -> None:
    out = io.StringIO()
    doc = {"batch": True, "success": False, "appliance_launches": 1, "timings": {"appliance launch": 20.0},
           "images": [
               {"success": True, "input": "a.img", "image": "a.img", "edits": [], "missing": []},
               {"success": False, "input": "b.img", "error": {"message": "b.img: no partitions found"}},
           ]}
    show_batch(Screen(out), doc, show_verify)
    text = out.getvalue()
    assert "every edit is in place" in text and "b.img: no partitions found" in text
    assert "2 images in 1 appliance launch" in text


def test_batch_table_names_what_a_dry_run_would_write() -> None:
    out = io.StringIO()
    doc = {"batch": True, "success": True, "dry_run": True, "appliance_launches": 1,
           "images": [{"success": True, "input": "a.img", "steps": [], "dry_run": True,
                       "output_files": ["/out/a.img", "/out/a.initrd", "/out/a.cfg"]}]}
    show_batch(Screen(out), doc, show_convert)
    assert "/out/a.img" in out.getvalue().split("appliance launch")[-1]
