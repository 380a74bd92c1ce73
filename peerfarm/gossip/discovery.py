"""mDNS discovery: announce this node and report the peers of our farm as they come and go.

This module owns everything about ``_peerfarm._tcp.local.``: the TXT record format, the instance
and host names we announce, how a remote record is validated and which of its addresses we pick,
and the bridge from zeroconf's threads into trio.

Rules:

- mDNS only *bootstraps*. A cleanly stopped peer says goodbye and is reported as ``PeerGone`` at
  once, but a crashed peer's records linger in zeroconf's cache for minutes, so liveness comes
  from gossip, never from here.
- The TXT record carries the farm *id* (a hash of the farm key), never the key itself.
- Anything a remote host announces is untrusted: a record that does not parse is logged at debug
  level and skipped; it never stops discovery.
- The core (``build_txt``, ``parse_announcement``, ``pick_address``, ``PeerTable``) does no I/O
  and never imports zeroconf's network side; ``Discovery`` is the thin trio edge around it. The
  blocking ``Zeroconf`` runs its own asyncio thread; we call it through ``trio.to_thread`` and
  its ``ServiceBrowser`` thread hands changes to trio with ``trio.from_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeAlias

import ifaddr
import trio
from zeroconf import Error as ZeroconfError
from zeroconf import (
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from peerfarm.errors import DecodeError, PeerfarmError, UsageError
from peerfarm.gossip import adapters

log = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_peerfarm._tcp.local."

#: Longest peer name carried in the TXT record, in UTF-8 bytes (cut on a character boundary).
NAME_MAX_BYTES: Final = 63
#: Longest node id / farm id we announce or accept, in bytes (printable ASCII only).
ID_MAX_BYTES: Final = 64
#: How long one service lookup may wait for answers, in seconds. Lookups usually hit the cache
#: (the records come with the PTR answer); a miss costs a few multicast queries.
LOOKUP_TIMEOUT: Final = 3.0
#: Concurrent lookups (each holds a worker thread while it waits).
LOOKUP_CONCURRENCY: Final = 4
#: Upper bound on stopping: goodbye packets (~0.4 s) plus closing zeroconf, in seconds.
STOP_TIMEOUT: Final = 5.0
#: Changes buffered between the browser thread and trio; beyond this a change is dropped (logged).
BROWSE_BUFFER: Final = 1024

_PRINTABLE_ID = re.compile(rf"[!-~]{{1,{ID_MAX_BYTES}}}")
_DECIMAL = re.compile(r"[0-9]{1,5}")
_LABEL_UNSAFE = re.compile(r"[\x00-\x1f\x7f.\\]")
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9-]")
_LABEL_MAX_BYTES = 63


class DiscoveryUnavailable(PeerfarmError):
    """mDNS cannot run here (no multicast-capable interface, address not local, socket refused).

    The daemon logs it ("mDNS unavailable, use --join") and carries on without discovery.
    """


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


def _parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
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
        plain = _parse_ip(candidate.split("%", 1)[0])
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


# --------------------------------------------------------------------------------------------
# The trio edge.


class _Change(Enum):
    CHANGED = "changed"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class _Browsed:
    name: str
    change: _Change


@dataclass(frozen=True, slots=True)
class _Looked:
    name: str
    ticket: int
    service: ResolvedService | None


_Internal: TypeAlias = _Browsed | _Looked


class _BrowserBridge:
    """The ServiceBrowser handler: runs on zeroconf's browser thread and must never raise."""

    def __init__(
        self, send: trio.MemorySendChannel[_Internal], token: trio.lowlevel.TrioToken
    ) -> None:
        self._send = send
        self._token = token

    def __call__(
        self, *, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        change = _Change.REMOVED if state_change is ServiceStateChange.Removed else _Change.CHANGED
        try:
            trio.from_thread.run_sync(
                self._send.send_nowait, _Browsed(name, change), trio_token=self._token
            )
        except trio.WouldBlock:
            log.warning("mDNS change for %r dropped: discovery is not keeping up", name)
        except (trio.ClosedResourceError, trio.BrokenResourceError, trio.RunFinishedError):
            log.debug("mDNS change for %r after discovery stopped", name)
        except Exception:  # the browser thread must survive anything
            log.debug("mDNS change for %r could not be delivered", name, exc_info=True)


def _interface_networks(interfaces: Sequence[str] | None) -> tuple[list[Network], list[str]]:
    """(networks we sit on, addresses to announce) from the host's adapters, via ifaddr.

    With explicit interfaces we announce exactly those; otherwise every IPv4 address except
    loopback (loopback only when it is all there is), like zeroconf's all-interfaces default,
    and except those of virtual adapters (``adapters.is_virtual``) unless they are all there is.
    """
    networks: list[Network] = []
    found: list[str] = []
    wanted = {ipaddress.ip_address(text) for text in interfaces or ()}
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            text = ip.ip if isinstance(ip.ip, str) else ip.ip[0]
            try:
                network = ipaddress.ip_network(f"{text}/{ip.network_prefix}", strict=False)
            except ValueError:
                continue
            if interfaces is None and network.version == 4:
                found.append(text)
                if not network.is_loopback:
                    networks.append(network)
            elif interfaces is not None and ipaddress.ip_address(text) in wanted:
                networks.append(network)
    if interfaces is not None:
        for text in interfaces:  # an address ifaddr did not list still counts as itself
            if not any(ipaddress.ip_address(text) in net for net in networks):
                networks.append(ipaddress.ip_network(text))
        return networks, list(interfaces)
    reachable = {a.address for a in adapters.outward(adapters.host_addresses())}
    outward = [a for a in found if a in reachable]
    return networks, outward or found


def _lookup(zc: Zeroconf, name: str) -> ResolvedService | None:
    """Resolve one service (blocking: run it in a worker thread). Never raises."""
    try:
        info = zc.get_service_info(SERVICE_TYPE, name, timeout=int(LOOKUP_TIMEOUT * 1000))
        if info is None:
            return None
        return ResolvedService(
            name=name,
            properties=dict(info.properties),
            addresses=tuple(info.parsed_scoped_addresses(IPVersion.All)),
        )
    except Exception:  # zeroconf stopped under us, or a record it could not unpack
        log.debug("mDNS lookup of %r failed", name, exc_info=True)
        return None


class Discovery:
    """Announce this node over mDNS and report the other peers of its farm."""

    def __init__(
        self,
        *,
        node_id: str,
        farm_id: str,
        name: str,
        port: int,
        protocol: int,
        interfaces: Sequence[str] | None = None,
    ) -> None:
        """``interfaces``: local IP addresses to use; ``None`` means all (the LAN default)."""
        if interfaces is not None:
            for interface in interfaces:
                if "%" in interface or _parse_ip(interface) is None:
                    raise UsageError(f"not an interface IP address: {interface!r}")
            if not interfaces:
                raise UsageError("interfaces: give at least one address, or None for all")
        self._txt = build_txt(
            node_id=node_id, farm_id=farm_id, protocol=protocol, port=port, name=name
        )
        probe = ResolvedService(
            name=name,
            properties={k.encode(): v.encode() for k, v in self._txt.items()},
            addresses=("127.0.0.1",),
        )
        try:  # what we announce must be what a peer accepts
            parse_announcement(probe, ())
        except MalformedAnnouncement as error:
            raise UsageError(f"cannot announce this node: {error}") from None
        self._node_id = node_id
        self._farm_id = farm_id
        self._port = port
        self._instance = instance_name(name, node_id)
        self._interfaces = list(interfaces) if interfaces is not None else None

    @property
    def service_name(self) -> str:
        """Our full DNS-SD service name (zeroconf may rename it on a conflict)."""
        return f"{self._instance}.{SERVICE_TYPE}"

    async def run(
        self,
        events: trio.MemorySendChannel[DiscoveryEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Announce, browse and send ``PeerFound``/``PeerGone`` for our farm until cancelled.

        Reports started once registered and browsing. Closes ``events`` when it ends (pass a
        clone to share a channel). On cancellation it says goodbye (shielded, at most
        ``STOP_TIMEOUT`` seconds) and closes zeroconf. Returns early if ``events`` is closed by
        the receiver. Raises ``DiscoveryUnavailable`` if mDNS cannot start here.
        """
        async with events:
            zc, networks, addresses = await trio.to_thread.run_sync(self._open)
            browser: ServiceBrowser | None = None
            registered: ServiceInfo | None = None
            try:
                info = ServiceInfo(
                    SERVICE_TYPE,
                    self.service_name,
                    port=self._port,
                    properties=dict(self._txt),
                    server=host_name(self._node_id),
                    parsed_addresses=addresses,
                )
                internal_send, internal_recv = trio.open_memory_channel[_Internal](BROWSE_BUFFER)
                table = PeerTable(
                    node_id=self._node_id, farm_id=self._farm_id, local_networks=networks
                )
                async with trio.open_nursery() as nursery:
                    bridge = _BrowserBridge(internal_send, trio.lowlevel.current_trio_token())
                    browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[bridge])
                    nursery.start_soon(
                        self._pump,
                        zc,
                        table,
                        internal_send,
                        internal_recv,
                        events,
                        nursery.cancel_scope,
                    )
                    await trio.to_thread.run_sync(self._register, zc, info)
                    registered = info
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT) as timer:
                    await trio.to_thread.run_sync(
                        _close, zc, browser, registered, abandon_on_cancel=True
                    )
                if timer.cancelled_caught:
                    log.warning("mDNS did not stop within %.1f s; abandoned", STOP_TIMEOUT)

    def _open(self) -> tuple[Zeroconf, list[Network], list[str]]:
        try:
            networks, addresses = _interface_networks(self._interfaces)
            interfaces = self._interfaces
            zc = Zeroconf(interfaces=interfaces) if interfaces is not None else Zeroconf()
        except (OSError, RuntimeError, ValueError, ZeroconfError) as error:
            where = ", ".join(self._interfaces) if self._interfaces else "all interfaces"
            raise DiscoveryUnavailable(f"mDNS unavailable on {where}: {error}") from error
        return zc, networks, addresses

    @staticmethod
    def _register(zc: Zeroconf, info: ServiceInfo) -> None:
        try:
            zc.register_service(info, allow_name_change=True)
        except (OSError, RuntimeError, ZeroconfError) as error:
            raise DiscoveryUnavailable(f"mDNS could not announce {info.name!r}: {error}") from error

    async def _pump(
        self,
        zc: Zeroconf,
        table: PeerTable,
        internal_send: trio.MemorySendChannel[_Internal],
        internal_recv: trio.MemoryReceiveChannel[_Internal],
        events: trio.MemorySendChannel[DiscoveryEvent],
        stop: trio.CancelScope,
    ) -> None:
        """The one task that touches ``table`` and sends ``events``, so events stay in order."""
        limiter = trio.CapacityLimiter(LOOKUP_CONCURRENCY)
        async with internal_recv, internal_send, trio.open_nursery() as lookups:
            async for item in internal_recv:
                if isinstance(item, _Looked):
                    out = table.resolved(item.name, item.ticket, item.service)
                elif item.change is _Change.REMOVED:
                    out = table.removed(item.name)
                else:
                    ticket = table.changed(item.name)
                    lookups.start_soon(
                        _resolve, zc, item.name, ticket, internal_send.clone(), limiter
                    )
                    out = []
                try:
                    for event in out:
                        await events.send(event)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    log.debug("discovery events channel closed; stopping")
                    stop.cancel()
                    return


async def _resolve(
    zc: Zeroconf,
    name: str,
    ticket: int,
    send: trio.MemorySendChannel[_Internal],
    limiter: trio.CapacityLimiter,
) -> None:
    async with send:
        service = None
        with trio.move_on_after(LOOKUP_TIMEOUT + 1.0):
            service = await trio.to_thread.run_sync(
                _lookup, zc, name, limiter=limiter, abandon_on_cancel=True
            )
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await send.send(_Looked(name, ticket, service))


def _close(zc: Zeroconf, browser: ServiceBrowser | None, info: ServiceInfo | None) -> None:
    """Stop browsing, say goodbye, close (blocking: run in a worker thread). Never raises."""
    if browser is not None:
        try:
            browser.cancel()
        except Exception:
            log.debug("mDNS browser did not cancel cleanly", exc_info=True)
    if info is not None:
        try:
            zc.unregister_service(info)
        except Exception:
            log.debug("mDNS goodbye for %r failed", info.name, exc_info=True)
    try:
        zc.close()
    except Exception:
        log.debug("zeroconf did not close cleanly", exc_info=True)
