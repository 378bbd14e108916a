"""What a VSA says of its own release: the SAN/iQ version it records, and the
kernel versions its /lib/modules holds. Pure: works on a Snapshot."""

from __future__ import annotations

from vsaimage.model import Snapshot

VERSION_FILE = "/etc/lefthand/.version"


def vsa_version(snap: Snapshot) -> str | None:
    text = snap.text(VERSION_FILE)
    return text.strip() or None if text is not None else None


def module_versions(snap: Snapshot) -> list[str]:
    """The directories under /lib/modules (one per kernel version)."""
    return sorted({p.split("/")[3] for p in snap.paths if p.startswith("/lib/modules/")})
