"""Edit `fstab`: /dev/sdXN and /dev/hdXN entries named as under Xen."""

from __future__ import annotations

import pytest

from fixtures.build_image import LAYOUTS, ROOT_TREE
from test_edit_shell import snapshot
from vsaimage.edits import EditContext, PartitionFacts, WriteFile
from vsaimage.edits.fstab import FSTAB, Fstab, patch_fstab, patch_grub, xen_spec
from vsaimage.errors import MissingFile

ROOT_UUID = "5b8b7c39-7a3a-4c5e-9a59-3f6f9f6c0a05"
SWAP_UUID = "0c8f3d0e-5a1b-4f7e-8d9c-2b6a1e4f7a10"
PARTS = (
    PartitionFacts(1, "ext3", "/boot", ""),
    PartitionFacts(3, "swap", "SWAP-sda3", SWAP_UUID),
    PartitionFacts(5, "ext3", "/", ROOT_UUID),
    PartitionFacts(6, "ext3", "", ""),
    PartitionFacts(7, "ext3", "/", ""),  # an upgrade slot with the same label
)
CTX = EditContext(partitions=PARTS)


def test_spaces_keep_the_column_of_the_next_field() -> None:
    text = "/dev/sda1               /boot                   ext3    defaults        1 2\n"
    new, rewrites, warnings = patch_fstab(text, PARTS)
    assert new == "LABEL=/boot             /boot                   ext3    defaults        1 2\n"
    assert [(r.line, r.old, r.new) for r in rewrites] == [(1, text.rstrip("\n"), new.rstrip("\n"))]
    assert "labelled /boot" in rewrites[0].why and warnings == []


def test_tabs_are_kept_and_uuid_preferred() -> None:
    new, rewrites, _ = patch_fstab("/dev/sda5\t/\text3\tdefaults\t1 1\n", PARTS)
    assert new == f"UUID={ROOT_UUID}\t/\text3\tdefaults\t1 1\n"
    assert rewrites[0].why == f"partition 5 holds ext3 UUID {ROOT_UUID}"


def test_swap_partition_by_uuid() -> None:
    new, _, _ = patch_fstab("  /dev/sda3 swap swap defaults 0 0\r\n", PARTS)
    assert new == f"  UUID={SWAP_UUID} swap swap defaults 0 0\r\n"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/dev/sda6", "/dev/xvda6"),  # no UUID nor label: the Xen name
        ("/dev/sda7", "/dev/xvda7"),  # its label is not unique
        ("/dev/sda9", "/dev/xvda9"),  # not found by inspection
        ("/dev/hda1", "LABEL=/boot"),  # Hyper-V's IDE system disk
        ("/dev/sda", "/dev/xvda"),
        ("/dev/sdb1", "/dev/xvdc1"),  # data disks: the udev table
        ("/dev/sdf", "/dev/xvdg"),
    ],
)
def test_xen_names(spec: str, expected: str) -> None:
    found = xen_spec(spec, PARTS)
    assert found is not None and found[0] == expected


def test_without_inspection_facts_the_xen_name() -> None:
    by_name = ("/dev/xvda5", "the system disk sda is xvda under Xen")
    assert xen_spec("/dev/sda5", ()) == by_name == xen_spec("/dev/sda5", PARTS, by_id=False)


KEPT = """# /etc/fstab
#/dev/sda5  /  ext3  defaults  1 1
LABEL=/                 /                       ext3    defaults        1 1
UUID=1234               /boot                   ext3    defaults        1 2
/dev/scsi/host0/bus0/target0/lun0/part6 /var/log ext3 defaults 1 2
/dev/xvda7              /data                   ext3    defaults        1 2
/dev/md0                /md                     ext3    defaults        1 2
tmpfs                   /dev/shm                tmpfs   defaults        0 0
devpts                  /dev/pts                devpts  gid=5,mode=620  0 0
sysfs                   /sys                    sysfs   defaults        0 0
proc                    /proc                   proc    defaults        0 0
nas:/export             /mnt/nas                nfs     defaults        0 0
/dev/cdrom              /media/cdrom            auto    noauto,ro       0 0

"""


def test_label_uuid_scsi_pseudo_and_commented_entries_are_kept() -> None:
    assert patch_fstab(KEPT, PARTS) == (KEPT, [], [])
    assert Fstab().plan(snapshot({FSTAB: KEPT}), CTX).status == "already applied"


def test_unknown_device_is_a_warning_naming_the_line() -> None:
    text = "/dev/sda5 / ext3 defaults 1 1\n/dev/sdi1 /x ext3 defaults 1 2\nFOO=bar /y ext3 defaults 1 2\n"
    new, rewrites, warnings = patch_fstab(text, ())
    assert new.splitlines()[1:] == text.splitlines()[1:] and len(rewrites) == 1
    assert warnings == [
        f"{FSTAB}:2 `/dev/sdi1 /x ext3 defaults 1 2`: /dev/sdi1 is not a disk name known to exist "
        "under Xen; left as is",
        f"{FSTAB}:3 `FOO=bar /y ext3 defaults 1 2`: FOO=bar is not a disk name known to exist "
        "under Xen; left as is",
    ]


GRUB = (ROOT_TREE.parent / "vsa-boot/grub/grub.conf").read_text()


def test_grub_kernel_root_gets_the_xen_name_and_comments_stay() -> None:
    assert patch_grub(GRUB, "/boot/grub/grub.conf") == (GRUB, [])  # root=LABEL=/ is kept
    text = GRUB.replace("root=LABEL=/", "root=/dev/sda5")
    new, rewrites = patch_grub(text, "/boot/grub/grub.conf")
    assert new == GRUB.replace("root=LABEL=/", "root=/dev/xvda5")
    assert "#          kernel /vmlinuz-version ro root=/dev/sda5" in new  # a comment
    assert [(r.file, r.line) for r in rewrites] == [("/boot/grub/grub.conf", 15)]


def test_plan_reports_each_line_then_is_already_applied() -> None:
    fstab = (ROOT_TREE / "etc/fstab").read_text()  # the stock layout's
    grub = GRUB.replace("root=LABEL=/", "root=/dev/sda5")
    snap = snapshot({FSTAB: fstab, "/boot/grub/grub.conf": grub})
    edit = Fstab()
    assert not edit.check(snap, CTX)
    plan = edit.plan(snap, CTX)
    rewritten = plan.details["rewritten"]
    assert isinstance(rewritten, list)
    assert [(r["file"], r["line"]) for r in rewritten] == [
        (FSTAB, 1), (FSTAB, 2), (FSTAB, 3), (FSTAB, 8), ("/boot/grub/grub.conf", 15)
    ]
    assert plan.warnings == ()
    writes = {c.path: c.data.decode() for c in plan.changes if isinstance(c, WriteFile)}
    assert "/dev/sd" not in writes[FSTAB] and "/dev/xvda6" in writes[FSTAB]
    done = snapshot(writes)
    assert edit.check(done, CTX) and edit.check(done, EditContext())
    assert edit.plan(done, CTX).status == "already applied"


def test_fixture_layouts_are_both_fixed() -> None:
    """The stock fstab names every disk by /dev/sdaN; alt mixes LABEL=, UUID= and /dev/sdaN."""
    for name, lay in LAYOUTS.items():
        text = "".join(f"{spec} {mnt} ext3 defaults 1 2\n" for mnt, spec in lay.fstab.items())
        facts = tuple(PartitionFacts(p.number, p.fs or "", p.label, p.uuid) for p in lay.partitions)
        new, rewrites, warnings = patch_fstab(text, facts)
        assert "/dev/sd" not in new and warnings == [], name
        assert len(rewrites) == sum(spec.startswith("/dev/sd") for spec in lay.fstab.values())


def test_missing_fstab_names_the_skip() -> None:
    with pytest.raises(MissingFile, match=FSTAB) as err:
        Fstab().plan(snapshot({}), CTX)
    assert "--skip fstab" in (err.value.hint or "")
    assert not Fstab().check(snapshot({}), CTX)


def test_sixth_and_seventh_data_disks_get_their_xen_names() -> None:
    """LeftHand OS 11.5 and later have 7 data-disk slots: sdg and sdh are
    xvdh and xvdi under Xen (no filesystem facts: the Xen name)."""
    text = "/dev/sdg1 /x ext3 defaults 1 2\n/dev/sdh2 /y ext3 defaults 1 2\n"
    new, rewrites, warnings = patch_fstab(text, ())
    assert new == "/dev/xvdh1 /x ext3 defaults 1 2\n/dev/xvdi2 /y ext3 defaults 1 2\n"
    assert len(rewrites) == 2 and warnings == []
