"""What the command line names as input: the disk image (a file in any
format of diskformat.py, a block device, or an iscsi:// URI read by
libguestfs's own iSCSI client) and the files read whole (kernel, initrd).
Cheap host-side checks run here, before an appliance is launched, so that
plainly bad input fails in milliseconds with a message naming the file."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from vsaimage.errors import BadInput, ImageError
from vsaimage.inputs import diskformat, iscsi, tarball
from vsaimage.inputs.ova import Ova, read_ova
from vsaimage.model import Drive

_ISCSI_RE = re.compile(r"iscsi://(?P<host>\[[^\]/]+\]|[^/:\[\]]+)(?::(?P<port>[^/]*))?"
                       r"/(?P<iqn>[^/]+)/(?P<lun>[^/]+)/?")
ISCSI_PORT = 3260
_ISCSI_FORM = "write it iscsi://HOST[:PORT]/IQN/LUN"


@dataclass(frozen=True)
class ImageSource:
    text: str  # as the user wrote it
    path: Path | None = None  # a host file or block device
    iscsi_server: str | None = None  # "tcp:HOST:PORT"
    iscsi_target: str | None = None  # "IQN/LUN"
    format: str = "raw"  # one of diskformat.FORMATS
    virtual_size: int | None = None  # known before unpacking for the qemu formats
    ova: Ova | None = None
    tar: tarball.Tarball | None = None

    @property
    def packed(self) -> bool:
        """Compressed, in an OVA or a tar: libguestfs cannot read it as it is."""
        return self.format not in diskformat.QEMU_FORMATS

    def ova_system_disks(self) -> tuple[ImageSource, ...]:
        """The other system disks an OVA's VM has (Ova.fellows), each taken
        out of the same archive as this one is."""
        if self.ova is None:
            return ()
        return tuple(replace(self, text=f"{self.text} (disk {n})", ova=replace(self.ova, chosen=n))
                     for n in self.ova.fellows)

    def facts(self) -> dict[str, Any]:
        """What inspect and convert report about the input itself."""
        doc: dict[str, Any] = {"format": self.format, "virtual_size": self.virtual_size}
        if self.ova is not None:
            doc["ova"] = self.ova.as_dict()
        if self.tar is not None:
            doc["tar"] = self.tar.as_dict()
        return doc

    @property
    def iscsi_uri(self) -> str:
        """The normalised URI (port always given), as qemu-img reads it."""
        assert self.iscsi_target and self.iscsi_server
        return f"iscsi://{self.iscsi_server.removeprefix('tcp:')}/{self.iscsi_target}"

    @property
    def name(self) -> str:
        """What outputs named after this input are called: the file's name
        without its extension (`vsa1.img` -> `vsa1`, `/dev/sdb` -> `sdb`; a
        compressed one without both: `vsa1.img.gz` -> `vsa1`), or for an
        iSCSI LUN the end of its IQN and the LUN (`vsa1-0`)."""
        if self.path is not None:
            stem = self.path.stem or self.path.name
            packed = self.format in diskformat.COMPRESSED or (self.tar is not None and self.tar.filters)
            return Path(stem).stem or stem if packed else stem
        assert self.iscsi_target
        iqn, lun = self.iscsi_target.rsplit("/", 1)
        return re.sub(r"[^A-Za-z0-9._-]", "_", f"{iqn.rsplit(':', 1)[-1]}-{lun}")

    def size(self) -> int:
        """Bytes: of a file or block device; for an iSCSI LUN by asking the
        target from the host (milliseconds)."""
        if self.path is not None:
            return file_size(self.path)
        return iscsi.lun_size(self.iscsi_uri, image=self.text)

    def drive(self, *, readonly: bool) -> Drive:
        """The drive to attach. An iSCSI LUN is first asked for its size on
        the host: a wrong URI then fails at once with the target's reason,
        where libguestfs would only say that qemu-img failed. A packed
        input is unpacked first (unpack.py)."""
        assert not self.packed, f"{self.text}: {self.format} must be unpacked first"
        if self.path is not None:
            return Drive(str(self.path), readonly=readonly, format=diskformat.qemu_name(self.format))
        self.size()
        assert self.iscsi_target and self.iscsi_server
        return Drive(self.iscsi_target, readonly=readonly, protocol="iscsi",
                     server=(self.iscsi_server,))

    def __str__(self) -> str:
        return self.text


def parse_image(text: str, *, input_format: str | None = None, disk: str | None = None) -> ImageSource:
    """The image argument, its format (`input_format`, else told from its
    content) checked on the host; `disk` chooses an OVA's disk (counted
    from 1) or a tar archive's disk image (its name, or counted from 1)."""
    if text.startswith("iscsi://"):
        if input_format not in (None, "raw") or disk is not None:
            raise ImageError(f"{text}: an iSCSI LUN is read as a raw disk (no --input-format, no --disk)")
        return _parse_iscsi(text)
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
    fmt = input_format or diskformat.detect(path)
    if fmt in (*diskformat.COMPRESSED, "ova", "tar") and stat.S_ISREG(st.st_mode):
        found = tarball.probe(path)
        if found is not None and (fmt == "tar" or not found[2]):
            return ImageSource(text, path=path, format="tar", tar=tarball.read_tarball(path, found, disk))
        if fmt == "tar":
            raise ImageError(f"{text}: not a tar archive (--input-format tar)")
    if disk is not None and fmt != "ova":
        raise ImageError(f"{text}: --disk chooses a disk of an OVA or a tar archive, and this is {fmt}")
    if fmt == "ova":
        if disk is not None and not disk.isdigit():
            raise ImageError(f"{text}: --disk {disk}: an OVA's disks are counted from 1 (--disk N)")
        return ImageSource(text, path=path, format=fmt, ova=read_ova(path, int(disk) if disk else None))
    if fmt in diskformat.COMPRESSED:
        return ImageSource(text, path=path, format=fmt)
    if fmt == "raw":
        check_partition_table(path)
        return ImageSource(text, path=path, virtual_size=file_size(path))
    return ImageSource(text, path=path, format=fmt, virtual_size=diskformat.virtual_size(path, fmt))


def file_size(path: Path) -> int:
    """The size of a file or block device, by seeking to its end: a block
    device's st_size is 0."""
    with open(path, "rb") as f:
        return f.seek(0, os.SEEK_END)


def _parse_iscsi(text: str) -> ImageSource:
    m = _ISCSI_RE.fullmatch(text)
    if not m:
        raise ImageError(f"{text}: not an iSCSI URI", hint=_ISCSI_FORM)
    host, port, iqn, lun = m.group("host", "port", "iqn", "lun")
    if host.startswith("["):
        if ":" not in host:
            raise ImageError(f"{text}: brackets are for IPv6 addresses only", hint=_ISCSI_FORM)
        # libguestfs (1.48) percent-encodes the brackets and colons of the
        # portal it hands to qemu, which then cannot resolve it.
        raise ImageError(f"{text}: libguestfs cannot reach an iSCSI portal given as an IPv6 address",
                         hint="use a host name that resolves to it")
    if port is None:
        port = str(ISCSI_PORT)
    if not (port.isdigit() and 0 < int(port) < 65536):
        raise ImageError(f"{text}: bad TCP port {port!r}", hint=_ISCSI_FORM)
    if not (lun.isdigit() and int(lun) < 2**14):
        raise ImageError(f"{text}: bad LUN {lun!r} (a number from 0 to 16383)", hint=_ISCSI_FORM)
    return ImageSource(text, iscsi_server=f"tcp:{host}:{int(port)}", iscsi_target=f"{iqn}/{int(lun)}")


def check_partition_table(path: Path, *, name: str | None = None) -> None:
    """A VSA system disk has an MBR (or GPT) partition table. `name` is what
    errors call the disk (the user's file, for a decompressed copy)."""
    what = name or str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as e:
        raise ImageError(f"{what}: cannot read: {e.strerror}") from None
    if len(head) < 512:
        raise ImageError(f"{what}: too small to be a disk image ({len(head)} bytes)")
    if head[510:512] != b"\x55\xaa" and head[512:520] != b"EFI PART":
        raise ImageError(f"{what}: no partition table (no MBR or GPT signature)",
                         hint="give the whole disk (dd of /dev/sdX), not one partition")


def open_input(path: Path, error: type[BadInput], what: str) -> BinaryIO:
    """An input file open for reading, or `error` with one line naming it."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise error(f"{path}: no such file ({what})") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not {what}") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror}") from None
    if stat.S_ISDIR(os.fstat(f.fileno()).st_mode):
        f.close()
        raise error(f"{path}: is a directory, not {what}")
    return f
