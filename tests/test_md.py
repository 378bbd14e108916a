"""md.py: the members' own superblocks, parsed (0.90 and 1.x), and what
they say of the array: its name in the guest, and whether the members agree."""

from __future__ import annotations

import struct

import pytest

from vsaimage.guest import md

UUID_WORDS = (0x486211A9, 0xAEE89DD1, 0x3D186B3C, 0x53958F34)


def sb090(*, events: int = 7, clean: bool = True, minor: int = 200, size_kib: int = 239104) -> bytes:
    """A metadata 0.90 superblock as md writes it (little-endian words)."""
    w = [0] * 1024
    w[0], w[1], w[2] = md.MAGIC, 0, 90
    w[5], w[13], w[14], w[15] = UUID_WORDS
    w[7], w[8], w[10], w[11] = 1, size_kib, 2, minor
    w[33] = 1 if clean else 0
    w[39], w[40] = events & 0xFFFFFFFF, events >> 32
    return struct.pack("<1024I", *w)


def sb1(*, events: int = 2, resync: int = 2**64 - 1, name: bytes = b"vsa:200") -> bytes:
    data = bytearray(4096)
    struct.pack_into("<II", data, 0, md.MAGIC, 1)
    data[16:32] = bytes.fromhex("52cd6fc0d958cd45b58646297b8836ba")
    data[32:32 + len(name)] = name
    struct.pack_into("<i", data, 72, 1)
    struct.pack_into("<I", data, 92, 2)
    struct.pack_into("<QQ", data, 128, 2048, 126976)
    struct.pack_into("<QQ", data, 200, events, resync)
    return bytes(data)


def test_a_090_superblock() -> None:
    sb = md.parse(sb090(events=(1 << 32) + 5), "0.90")
    assert sb == md.Superblock("0.90", "486211a9:aee89dd1:3d186b3c:53958f34", (1 << 32) + 5, True, 1, 2, 0,
                               239104 * 1024, 200, "")
    assert not md.parse(sb090(clean=False), "0.90").clean  # type: ignore[union-attr]


def test_a_1x_superblock() -> None:
    sb = md.parse(sb1(), "1.2")
    assert sb is not None and sb.uuid == "52cd6fc0:d958cd45:b5864629:7b8836ba"
    assert (sb.events, sb.clean, sb.data_offset, sb.data_size, sb.name) == (2, True, 2**20, 126976 * 512,
                                                                             "vsa:200")
    assert not md.parse(sb1(resync=0), "1.2").clean  # type: ignore[union-attr]


def test_no_superblock() -> None:
    assert md.parse(bytes(4096), "0.90") is None and md.parse(sb1(), "0.90") is None
    assert md.parse(sb090(), "1.2") is None


def test_where_each_metadata_keeps_it() -> None:
    size = 234 * 2**20 + 12345
    found = dict(md.offsets(size))
    assert found["0.90"] == (size & ~0xFFFF) - 0x10000 and found["0.90"] % 0x10000 == 0
    assert found["1.2"] == 4096 and found["1.1"] == 0
    assert size - 8192 - 4096 < found["1.0"] <= size - 8192


@pytest.mark.parametrize(("blocks", "name"), [
    ([md.parse(sb090(), "0.90")], "/dev/md200"),
    ([md.parse(sb1(), "1.2")], "/dev/md200"),
    ([md.parse(sb1(name=b"root"), "1.2")], "/dev/md/root"),
    ([None], "/dev/md127"),
])
def test_the_guests_name_for_the_array(blocks: list[md.Superblock | None], name: str) -> None:
    assert md.guest_name(blocks, "/dev/md127") == name


def array(*blocks: bytes | None, raid_disks: int = 2) -> md.Array:
    members = tuple(md.Member(f"/dev/sd{'ab'[n]}2", n, 2, None if b is None else md.parse(b, "0.90"))
                    for n, b in enumerate(blocks))
    return md.Array("/dev/md200", "486211a9:aee89dd1:3d186b3c:53958f34", "0.90", "raid1", raid_disks, members,
                    "/dev/md200")


def test_members_agree_when_clean_with_the_same_events() -> None:
    assert array(sb090(), sb090()).agreement() == (True, "2 members, clean, 7 events each")
    assert array(sb090(), sb090()).member_names(["xvda", "xvdb"]) == "xvda2, xvdb2"


@pytest.mark.parametrize(("blocks", "why"), [
    ((sb090(), sb090(events=9)), "event counts differ (7, 9)"),
    ((sb090(), sb090(clean=False)), "a write was in flight"),
    ((sb090(), None), "no superblock"),
    ((sb090(),), "1 of 2 members"),
])
def test_members_that_do_not_agree(blocks: tuple[bytes | None, ...], why: str) -> None:
    ok, said = array(*blocks).agreement()
    assert not ok and why in said


def test_uuid_forms() -> None:
    assert md.same_uuid("52cd6fc0:d958cd45:b5864629:7b8836ba", "52CD6FC0-D958-CD45-B586-46297B8836BA")
    assert md.blkid_uuid("52cd6fc0-d958-cd45-b586-46297b8836ba") == "52cd6fc0:d958cd45:b5864629:7b8836ba"


def test_the_verify_row_names_the_members_and_says_why() -> None:
    from vsaimage.commands import results
    from vsaimage.guest.appliance import Partition
    from vsaimage.guest.layout import Layout, Role

    root = Partition(1000, "/dev/md200", 0, 2**28, None, "ext3", "", "u", array="/dev/md200")
    layout = Layout("/dev/sda", (), Role(root, "holds /etc/lefthand"), None, (),
                    array(sb090(), sb090(events=8)), ("vsa-1.img", "vsa-2.img"))
    row = results.md_members_row(layout)
    assert row["status"] == "not applied" and row["details"] == {"why": "event counts differ (7, 8)"}
    assert row["title"] == ("the members of md array /dev/md200 agree "
                            "(vsa-1.img partition 2, vsa-2.img partition 2)")


def test_a_090_superblock_given_its_minor_back() -> None:
    """The appliance assembles a 0.90 array under a minor of its own, which
    md writes into the superblocks: md.close gives them the guest's back,
    with a checksum md accepts (calc_sb_csum: the words summed, folded)."""
    block = md.with_minor(sb090(minor=127), 200)
    assert md.parse(block, "0.90").preferred_minor == 200  # type: ignore[union-attr]
    assert md.checksum_ok(block) and not md.checksum_ok(sb090())
    changed = [n for n in range(0, 4096, 4) if block[n:n + 4] != sb090(minor=127)[n:n + 4]]
    assert changed == [11 * 4, 38 * 4]  # md_minor and sb_csum, nothing else
    # the sum carried past 32 bits is folded in once, as md does
    words = [0] * 1024
    words[0], words[1], words[2], words[3] = md.MAGIC, 0, 90, 0xFFFFFFFF
    folded = md.with_minor(struct.pack("<1024I", *words), 200)
    total = md.MAGIC + 90 + 0xFFFFFFFF + 200
    assert struct.unpack_from("<I", folded, 38 * 4)[0] == (total & 0xFFFFFFFF) + (total >> 32)


def lone(*disks: int) -> list[md.Lone]:
    return [md.Lone(md.Member(f"/dev/sd{'abc'[n]}2", n, 2, md.parse(sb090(), "0.90")), "/dev/md200", "ext3")
            for n in disks]


def test_complete_sets_are_arrays_with_every_member_here() -> None:
    # both members of the 2-member array attached but unassembled: assemble
    # them; one alone is missing its other member: nothing to assemble
    both, sb = lone(0, 1), md.parse(sb090(), "0.90")
    assert sb is not None and md.complete_sets(both) == {sb.uuid: both}
    assert md.complete_sets(lone(0)) == {}
    assert md.complete_sets([]) == {}
    unreadable = [md.Lone(md.Member("/dev/sda2", 0, 2, None), "/dev/md200", None)] * 2
    assert md.complete_sets(unreadable) == {}
