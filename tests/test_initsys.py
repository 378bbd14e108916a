"""Which init system the VSA boots with, told from its content."""

from __future__ import annotations

import pytest

from fixtures.build_image import FIXTURES, ROOT_TREE
from test_edit_shell import snapshot
from vsaimage.vsa import initsys

LHOS12_INIT = (FIXTURES / "lhos12-root/sbin/init").read_bytes()
SANIQ_INITTAB = (ROOT_TREE / "etc/inittab").read_text()
RHEL6_INITTAB = (FIXTURES / "lhos12-root/etc/inittab").read_text()
ELF = b"\x7fELF\x02\x01\x01"


@pytest.mark.parametrize(("files", "paths", "name", "said"), [
    ({"/sbin/init": ELF + b"\0INIT_VERSION=sysvinit-2.86\0"}, set(), "sysvinit",
     "/sbin/init: ELF program naming 'INIT_VERSION=sysvinit-2.86'"),
    ({"/sbin/init": ELF + b"\0init (upstart 0.6.5)\0"}, set(), "upstart",
     "/sbin/init: ELF program naming 'upstart 0.6.5'"),
    ({"/sbin/init": ELF + b"\0systemd 219\0"}, set(), "systemd",
     "/sbin/init: ELF program naming 'systemd 219'"),
    ({"/sbin/init": LHOS12_INIT}, set(), "upstart", "/sbin/init: file naming 'upstart 0.6.5'"),
    # the program says nothing: the configuration decides when it points one way
    ({"/sbin/init": ELF, "/etc/inittab": SANIQ_INITTAB}, set(), "sysvinit",
     "/etc/inittab: 19 active lines besides initdefault"),
    ({"/etc/inittab": RHEL6_INITTAB, "/etc/init/tty.conf": "exec /sbin/mingetty $TTY\n"}, set(),
     "upstart",
     "1 upstart job files in /etc/init (tty.conf); /etc/inittab holds only the default runlevel"),
    ({}, {"/lib/systemd/system/getty@.service"}, "systemd", "systemd units: 1 in /lib/systemd/system"),
    ({"/etc/inittab": SANIQ_INITTAB}, {"/lib/systemd/system/getty@.service"}, "unknown", ""),
    ({}, set(), "unknown", "no /sbin/init, /etc/inittab, upstart job or systemd unit"),
])
def test_detect(files: dict[str, str | bytes], paths: set[str], name: str, said: str) -> None:
    found = initsys.detect(snapshot(files, paths))
    assert found.name == name
    assert said in found.evidence or (not said and len(found.evidence) == 2)


def test_symlink_to_systemd() -> None:
    from vsaimage.model import GuestFile, Snapshot

    snap = Snapshot({"/sbin/init": GuestFile("/sbin/init", ELF, 0o755, real="/lib/systemd/systemd")})
    assert initsys.detect(snap).evidence == ("/sbin/init -> /lib/systemd/systemd",)


def test_program_outweighs_configuration() -> None:
    """An inittab left behind does not make an upstart system sysvinit."""
    snap = snapshot({"/sbin/init": ELF + b"upstart 0.6.5", "/etc/inittab": SANIQ_INITTAB})
    assert initsys.detect(snap).name == "upstart"


def test_active_inittab_lines() -> None:
    assert initsys.active_inittab_lines(RHEL6_INITTAB) == []
    saniq = initsys.active_inittab_lines(SANIQ_INITTAB)
    assert any(line.startswith("1:2345:respawn:") for line in saniq)
    assert not any(line.startswith("id:") for line in saniq)
