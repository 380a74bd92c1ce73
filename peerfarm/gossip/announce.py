"""mDNS records of ``_peerfarm._tcp.local.``, pure: their format, validation and the peer table.

This module owns what we announce and how we read what others announce: the TXT record format,
the instance and host names, how a remote record is validated and which of its addresses we
pick, and :class:`PeerTable`, which turns resolved records into :class:`PeerFound` /
:class:`PeerGone` events for our farm. It does no I/O and imports neither trio nor zeroconf;
the trio edge around it is :mod:`peerfarm.gossip.discovery`.

Rules: the TXT record carries the farm *id* (a hash of the farm key), never the key itself.
Anything a remote host announces is untrusted: a record that does not parse is logged at debug
level and skipped; it never stops discovery.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from peerfarm.errors import DecodeError

log = logging.getLogger("peerfarm.gossip.discovery")

SERVICE_TYPE: Final = "_peerfarm._tcp.local."

#: Longest peer name carried in the TXT record, in UTF-8 bytes (cut on a character boundary).
NAME_MAX_BYTES: Final = 63
#: Longest node id / farm id we announce or accept, in bytes (printable ASCII only).
ID_MAX_BYTES: Final = 64

_PRINTABLE_ID = re.compile(rf"[!-~]{{1,{ID_MAX_BYTES}}}")
_DECIMAL = re.compile(r"[0-9]{1,5}")
_LABEL_UNSAFE = re.compile(r"[\x00-\x1f\x7f.\\]")
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9-]")
_LABEL_MAX_BYTES = 63


class MalformedAnnouncement(DecodeError):
    """A remote ``_peerfarm._tcp`` record that does not parse; says which field was wrong."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a peer announces: who it is, which farm and protocol, and where to reach it."""

    node_id: str
    farm_id: str
    protocol: int
    address: tuple[str, int]
    name: str


@dataclass(frozen=True, slots=True)
class PeerFound:
    """A peer of our farm was announced, or its announcement changed (e.g. a new address)."""

    announcement: Announcement


@dataclass(frozen=True, slots=True)
class PeerGone:
    """A peer withdrew its announcement (a clean stop). A crash is *not* reported here."""

    node_id: str


DiscoveryEvent: TypeAlias = PeerFound | PeerGone
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ResolvedService:
    """The parts of a resolved mDNS service we use, copied out of zeroconf's ``ServiceInfo``."""

    name: str
    properties: Mapping[bytes, bytes | None]
    addresses: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Pure core: record format, validation, address choice, the table of announced peers.


def truncate_utf8(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes without splitting a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def build_txt(*, node_id: str, farm_id: str, protocol: int, port: int, name: str) -> dict[str, str]:
    """The TXT record we announce. Keys are short; the farm *id* goes out, never the key."""
    return {
        "id": node_id,
        "v": str(protocol),
        "port": str(port),
        "farm": farm_id,
        "name": truncate_utf8(name, NAME_MAX_BYTES),
    }


def instance_name(name: str, node_id: str) -> str:
    """Our DNS-SD instance label: the peer name plus a node-id prefix, unique per node."""
    suffix = "-" + _HOST_UNSAFE.sub("-", node_id[:8])
    base = _LABEL_UNSAFE.sub("-", name) or "peerfarm"
    return truncate_utf8(base, _LABEL_MAX_BYTES - len(suffix.encode("utf-8"))) + suffix


def host_name(node_id: str) -> str:
    """The mDNS host name our A/AAAA records hang off: unique per node, DNS-safe."""
    return f"pf-{_HOST_UNSAFE.sub('-', node_id[: _LABEL_MAX_BYTES - 3])}.local."


def _text_field(properties: Mapping[bytes, bytes | None], key: bytes) -> str:
    raw = properties.get(key)
    if raw is None:
        raise MalformedAnnouncement(f"TXT key {key.decode()!r} missing or without a value")
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedAnnouncement(f"TXT key {key.decode()!r} is not ASCII") from None


def _id_field(properties: Mapping[bytes, bytes | None], key: bytes) -> str:
    value = _text_field(properties, key)
    if not _PRINTABLE_ID.fullmatch(value):
        raise MalformedAnnouncement(f"TXT key {key.decode()!r} is not an id: {value!r:.80}")
    return value


def _int_field(properties: Mapping[bytes, bytes | None], key: bytes, low: int) -> int:
    value = _text_field(properties, key)
    if not _DECIMAL.fullmatch(value) or not low <= int(value) <= 65535:
        raise MalformedAnnouncement(f"TXT key {key.decode()!r} out of range: {value!r:.80}")
    return int(value)


def parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def pick_address(candidates: Iterable[str], local_networks: Sequence[Network]) -> str | None:
    """The candidate most likely reachable from here, or None if none is a valid IP address.

    Best first: inside one of our own networks (same subnet, so one hop); then in the family of
    our interfaces; then not loopback (a remote loopback address means *its* host); then not
    link-local; ties keep the announced order.
    """
    families = {net.version for net in local_networks}
    ranked: list[tuple[tuple[bool, bool, bool, bool], int, str]] = []
    for position, candidate in enumerate(candidates):
        plain = parse_ip(candidate.split("%", 1)[0])
        if plain is None:
            continue
        key = (
            not any(plain in net for net in local_networks if net.version == plain.version),
            bool(families) and plain.version not in families,
            plain.is_loopback,
            plain.is_link_local,
        )
        ranked.append((key, position, candidate))
    return min(ranked)[2] if ranked else None


def parse_announcement(service: ResolvedService, local_networks: Sequence[Network]) -> Announcement:
    """Validate a remote record; raises ``MalformedAnnouncement`` naming the bad field."""
    properties = service.properties
    node_id = _id_field(properties, b"id")
    farm_id = _id_field(properties, b"farm")
    protocol = _int_field(properties, b"v", 0)
    port = _int_field(properties, b"port", 1)
    raw_name = properties.get(b"name")
    name = (
        truncate_utf8(raw_name.decode("utf-8", "replace"), NAME_MAX_BYTES)
        if raw_name is not None
        else service.name.split(".", 1)[0]
    )
    address = pick_address(service.addresses, local_networks)
    if address is None:
        raise MalformedAnnouncement(f"no usable address in {service.addresses!r:.120}")
    return Announcement(
        node_id=node_id, farm_id=farm_id, protocol=protocol, address=(address, port), name=name
    )


class PeerTable:
    """Which mDNS instance names currently announce which peer of our farm. No I/O.

    Browse changes come in as ``changed(name)`` (added or updated: look it up, then report with
    the returned ticket) and ``removed(name)``. A lookup that finishes after a newer change to the
    same name carries a stale ticket and is ignored, so out-of-order lookups cannot resurrect a
    peer that said goodbye.
    """

    def __init__(self, *, node_id: str, farm_id: str, local_networks: Sequence[Network]) -> None:
        self._node_id = node_id
        self._farm_id = farm_id
        self._local_networks = tuple(local_networks)
        self._tickets: dict[str, int] = {}
        self._next_ticket = 0
        self._known: dict[str, Announcement] = {}

    @property
    def peers(self) -> dict[str, Announcement]:
        """A copy of the current map from instance name to announcement."""
        return dict(self._known)

    def changed(self, name: str) -> int:
        """A service was added or updated; returns the ticket its lookup must report with."""
        self._next_ticket += 1
        self._tickets[name] = self._next_ticket
        return self._next_ticket

    def removed(self, name: str) -> list[DiscoveryEvent]:
        """A service said goodbye; pending lookups for it become stale."""
        self._tickets.pop(name, None)
        return self._forget(name)

    def resolved(
        self, name: str, ticket: int, service: ResolvedService | None
    ) -> list[DiscoveryEvent]:
        """The lookup for ``ticket`` finished (``None``: nobody answered in time)."""
        if self._tickets.get(name) != ticket:
            return []
        if service is None:
            log.debug("mDNS lookup of %r got no answer", name)
            return []
        try:
            announcement: Announcement | None = parse_announcement(service, self._local_networks)
        except MalformedAnnouncement as error:
            log.debug("ignoring malformed mDNS record %r: %s", name, error)
            announcement = None
        if announcement is not None and announcement.farm_id != self._farm_id:
            log.debug("ignoring %r: another farm", name)
            announcement = None
        if announcement is not None and announcement.node_id == self._node_id:
            announcement = None
        old = self._known.get(name)
        events: list[DiscoveryEvent] = []
        if old is not None and (announcement is None or announcement.node_id != old.node_id):
            events += self._forget(name)
        if announcement is not None and announcement != old:
            self._known[name] = announcement
            events.append(PeerFound(announcement))
        return events

    def _forget(self, name: str) -> list[DiscoveryEvent]:
        old = self._known.pop(name, None)
        if old is None or any(a.node_id == old.node_id for a in self._known.values()):
            return []
        return [PeerGone(old.node_id)]
