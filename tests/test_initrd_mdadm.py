"""initrd/mdadm.py: the repacked initrd assembles the root's md array under
the name the guest boots from (mdadm.conf's ARRAY line), and an initrd
without mdadm is refused."""

from __future__ import annotations

import gzip

import pytest

import initrd_reader as rd
from support import finish_bytes, prepare_bytes
from vsaimage.initrd import mdadm

LINE = mdadm.array_line("/dev/md200", "0.90", "486211a9:aee89dd1:3d186b3c:53958f34")
HOST_CONF = "HOMEHOST <system>\nMAILADDR root\n# by mkconf\n"


def initrd(conf: str | None = HOST_CONF, *, with_mdadm: bool = True) -> bytes:
    m = rd.member
    members = [m(".", 0o040755, ino=1), m("scripts", 0o040755, ino=2), m("etc", 0o040755, ino=3)]
    if with_mdadm:
        members += [m("usr", 0o040755, ino=4), m("usr/sbin", 0o040755, ino=5),
                    m("usr/sbin/mdadm", 0o100755, b"\x7fELF", ino=6),
                    m("scripts/local-block", 0o040755, ino=7),
                    m("scripts/local-block/mdadm", 0o100755, b"#!/bin/sh\n", ino=8)]
    if conf is not None:
        members += [m("etc/mdadm", 0o040755, ino=9),
                    m("etc/mdadm/mdadm.conf", 0o100644, conf.encode(), ino=10)]
    return gzip.compress(rd.write_newc(members), mtime=0)


def conf_of(data: bytes) -> str:
    return next(x.data.decode() for x in rd.main_members(data) if x.name == "etc/mdadm/mdadm.conf")


def test_the_array_line_is_added_and_the_rest_kept() -> None:
    out, result = finish_bytes(prepare_bytes(initrd()), md_array=LINE)
    assert conf_of(out) == HOST_CONF + LINE
    assert "etc/mdadm/mdadm.conf" in result.changed and not result.already_applied
    again, result = finish_bytes(prepare_bytes(out), md_array=LINE)
    assert again == out and result.already_applied


def test_a_stale_line_for_the_same_array_is_replaced() -> None:
    stale = "ARRAY /dev/md127 UUID=486211A9:AEE89DD1:3D186B3C:53958F34 name=x\nARRAY /dev/md0 UUID=1:2:3:4\n"
    out, _ = finish_bytes(prepare_bytes(initrd(HOST_CONF + stale)), md_array=LINE)
    assert conf_of(out) == HOST_CONF + "ARRAY /dev/md0 UUID=1:2:3:4\n" + LINE


def test_an_initrd_without_mdadm_conf_gets_one() -> None:
    out, result = finish_bytes(prepare_bytes(initrd(None)), md_array=LINE)
    assert conf_of(out) == LINE
    assert {"etc/mdadm", "etc/mdadm/mdadm.conf"} <= set(result.added)


def test_what_assembling_needs() -> None:
    assert mdadm.missing(k.name.encode() for k in rd.main_members(initrd())) == []
    assert mdadm.missing(k.name.encode() for k in rd.main_members(initrd(with_mdadm=False))) == [
        "mdadm", "its local-block script"]
    assert mdadm.needs("raid1") == (("raid1",), ("md_mod",))
    assert mdadm.needs("raid5") == (("raid456",), ("md_mod",))
    assert LINE == "ARRAY /dev/md200 metadata=0.90 UUID=486211a9:aee89dd1:3d186b3c:53958f34\n"


@pytest.mark.parametrize("text", ["", "MAILADDR root", "ARRAY /dev/md0 UUID=a:b:c:d"])
def test_with_array_ends_every_line(text: str) -> None:
    assert mdadm.with_array(text, LINE).endswith(("\n" if text else "") + LINE)
