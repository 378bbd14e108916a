"""The disk image given on the command line: a raw file, a block device, or an
iscsi:// URI read by libguestfs's own iSCSI client. Cheap host-side checks run
here, before an appliance is launched, so that plainly bad input fails in
milliseconds with a message naming the file."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from vsaimage.errors import ImageError
from vsaimage.guest import Drive

_ISCSI_RE = re.compile(r"iscsi://(?P<host>\[[^\]]+\]|[^/:]+)(?::(?P<port>\d+))?/(?P<iqn>[^/]+)/(?P<lun>\d+)/?")


@dataclass(frozen=True)
class ImageSource:
    text: str  # as the user wrote it
    path: Path | None = None  # a host file or block device
    iscsi_server: str | None = None  # "tcp:HOST:PORT"
    iscsi_target: str | None = None  # "IQN/LUN"

    @property
    def is_block_device(self) -> bool:
        return self.path is not None and stat.S_ISBLK(self.path.stat().st_mode)

    def drive(self, *, readonly: bool) -> Drive:
        if self.path is not None:
            return Drive(str(self.path), readonly=readonly)
        assert self.iscsi_target and self.iscsi_server
        return Drive(self.iscsi_target, readonly=readonly, protocol="iscsi",
                     server=(self.iscsi_server,))

    def __str__(self) -> str:
        return self.text


def parse_image(text: str) -> ImageSource:
    if text.startswith("iscsi://"):
        m = _ISCSI_RE.fullmatch(text)
        if not m:
            raise ImageError(f"{text}: not an iSCSI URI", hint="write it iscsi://HOST[:PORT]/IQN/LUN")
        port = m.group("port") or "3260"
        return ImageSource(text, iscsi_server=f"tcp:{m.group('host')}:{port}",
                           iscsi_target=f"{m.group('iqn')}/{m.group('lun')}")
    path = Path(text)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"{text}: no such file") from None
    except OSError as e:
        raise ImageError(f"{text}: cannot access: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{text}: is a directory, not a disk image")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise ImageError(f"{text}: not a regular file or block device")
    if not os.access(path, os.R_OK):
        raise ImageError(f"{text}: permission denied (cannot read it)")
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        raise ImageError(f"{text}: empty file")
    _check_partition_table(path)
    return ImageSource(text, path=path)


def _check_partition_table(path: Path) -> None:
    """A VSA system disk has an MBR (or GPT) partition table."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as e:
        raise ImageError(f"{path}: cannot read: {e.strerror}") from None
    if len(head) < 512:
        raise ImageError(f"{path}: too small to be a disk image ({len(head)} bytes)")
    if head[510:512] != b"\x55\xaa" and head[512:520] != b"EFI PART":
        raise ImageError(f"{path}: no partition table (no MBR or GPT signature)",
                         hint="give the whole disk (dd of /dev/sdX), not one partition")
