"""Who the converted VSA is: the MAC and domain UUID of its xl config.

The VSA takes its serial id from eth0's MAC, and its management group knows
a node by that serial: a new MAC makes it a new node. So the MAC the guest
recorded under VMware (its ifcfg-eth0 HWADDR, a udev persistent-net rule,
the serial SAN/iQ saved) is kept by default; one is derived from the root
filesystem's UUID only when the guest records none, `--mac` overrides, and
`--new-identity` makes a fresh MAC and UUID for a clone. Pure: works on a
Snapshot.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass

from vsaimage.errors import BadInput
from vsaimage.model import Snapshot
from vsaimage.xen.xlcfg import derive_identity, validate_mac, xen_mac

IFCFG = "/etc/sysconfig/network-scripts/ifcfg-eth0"
# udev's generator (CentOS 6 and later), and Debian's older name for it.
PERSISTENT_NET = ("/etc/udev/rules.d/70-persistent-net.rules", "/etc/udev/rules.d/z25_persistent-net.rules")
# SAN/iQ's getSystemSerial writes eth0's MAC here, lowercase without colons.
SERIAL = "/etc/lefthand/serial"
READS = (IFCFG, *PERSISTENT_NET, SERIAL)

_MAC = r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"
_IFCFG_HWADDR = re.compile(rf"^\s*(?:HWADDR|MACADDR)=[\"']?({_MAC})[\"']?\s*$", re.MULTILINE)
_RULE_ADDRESS = re.compile(rf"(?:ATTRS?|SYSFS)\{{address\}}==\"({_MAC})\"")
_RULE_NAME = re.compile(r"\bNAME:?=\"([^\"]+)\"")
_SERIAL = re.compile(r"\s*([0-9A-Fa-f]{12})\s*")


@dataclass(frozen=True)
class Found:
    mac: str  # canonical: lowercase with colons
    source: str  # the file and what in it


def _usable(mac: str) -> str | None:
    """The canonical form of a MAC a vif can take (unicast, not all zeros)."""
    try:
        return validate_mac(mac)
    except BadInput:
        return None


def mac_from_ifcfg(text: str) -> str | None:
    m = _IFCFG_HWADDR.search(text)
    return _usable(m.group(1)) if m else None


def mac_from_persistent_net(text: str, interface: str = "eth0") -> str | None:
    """The address of the rule naming `interface` (udev writes one rule per
    line, matching the address and setting NAME)."""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        address, name = _RULE_ADDRESS.search(line), _RULE_NAME.search(line)
        if address and name and name.group(1) == interface:
            return _usable(address.group(1))
    return None


def mac_from_serial(text: str) -> str | None:
    m = _SERIAL.fullmatch(text)
    if not m:
        return None
    digits = m.group(1).lower()
    return _usable(":".join(digits[i : i + 2] for i in range(0, 12, 2)))


def recorded_macs(snap: Snapshot) -> list[Found]:
    """Every MAC of eth0 the guest records, in order of trust."""
    found: list[Found] = []
    text = snap.text(IFCFG)
    if text is not None and (mac := mac_from_ifcfg(text)):
        found.append(Found(mac, f"{IFCFG} HWADDR"))
    for path in PERSISTENT_NET:
        text = snap.text(path)
        if text is not None and (mac := mac_from_persistent_net(text)):
            found.append(Found(mac, f"{path} (eth0)"))
    text = snap.text(SERIAL)
    if text is not None and (mac := mac_from_serial(text)):
        found.append(Found(mac, f"{SERIAL} (SAN/iQ serial)"))
    return found


@dataclass(frozen=True)
class Identity:
    uuid: str
    mac: str
    uuid_source: str
    mac_source: str
    # other MACs the guest records, when they disagree with the one used
    conflicts: tuple[Found, ...] = ()

    @property
    def warning(self) -> str | None:
        """The guest's own network set-up names another MAC than the config:
        Red Hat's ifup refuses an interface whose HWADDR differs, and udev's
        persistent-net rule names the new card eth1."""
        config = [f for f in self.conflicts if not f.source.startswith(SERIAL)]
        if not config:
            return None
        where = ", ".join(f"{f.source}: {f.mac}" for f in config)
        return (f"the config gives eth0 MAC {self.mac} ({self.mac_source}) but the guest records another "
                f"({where}): eth0 may not come up until that record is changed")

    def as_dict(self) -> dict[str, object]:
        doc: dict[str, object] = {"uuid": self.uuid, "mac": self.mac, "uuid_source": self.uuid_source,
                                  "mac_source": self.mac_source}
        if self.conflicts:
            doc["other_recorded_macs"] = [{"mac": f.mac, "source": f.source} for f in self.conflicts]
        return doc


def fresh() -> tuple[str, str]:
    """A new (uuid, MAC) for a clone: random, the MAC in Xen's OUI as
    derive_identity's."""
    return str(uuid.uuid4()), xen_mac(secrets.token_bytes(3))


def choose(snap: Snapshot, seed: str, *, mac: str | None = None, dom_uuid: str | None = None,
           new_identity: bool = False, given: tuple[str, str] = ("--mac", "--uuid")) -> Identity:
    """The identity of the xl config: options first (`mac` and `dom_uuid`
    canonical, as the command line validated them; `given` says where each
    came from), then (unless a new identity is asked for) the MAC the guest
    records, then derived ones."""
    if new_identity:
        base_uuid, base_mac = fresh()
        base_source = "--new-identity (random)"
    else:
        base_uuid, base_mac = derive_identity(seed)
        base_source = "derived from the root filesystem UUID"
    found = recorded_macs(snap)
    if mac:
        chosen_mac, mac_source = mac, given[0]
    elif found and not new_identity:
        chosen_mac, mac_source = found[0].mac, found[0].source
    else:
        chosen_mac = base_mac
        mac_source = base_source if new_identity else f"{base_source} (the guest records no MAC)"
    chosen_uuid, uuid_source = (dom_uuid, given[1]) if dom_uuid else (base_uuid, base_source)
    conflicts = tuple(f for f in found if f.mac != chosen_mac)
    return Identity(chosen_uuid, chosen_mac, uuid_source, mac_source, conflicts)
