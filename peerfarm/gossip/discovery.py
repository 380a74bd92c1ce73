"""mDNS discovery: announce this node and report the peers of our farm as they come and go.

This module is the thin trio edge around :mod:`peerfarm.gossip.announce` (the record format,
validation and the peer table, re-exported here): it registers our service, browses for others,
and bridges zeroconf's threads into trio.

Rules:

- mDNS only *bootstraps*. A cleanly stopped peer says goodbye and is reported as ``PeerGone`` at
  once, but a crashed peer's records linger in zeroconf's cache for minutes, so liveness comes
  from gossip, never from here.
- The blocking ``Zeroconf`` runs its own asyncio thread; we call it through ``trio.to_thread`` and
  its ``ServiceBrowser`` thread hands changes to trio with ``trio.from_thread.run_sync``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Sequence
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

from peerfarm.errors import PeerfarmError, UsageError
from peerfarm.gossip import adapters
from peerfarm.gossip.announce import (
    ID_MAX_BYTES,
    NAME_MAX_BYTES,
    SERVICE_TYPE,
    Announcement,
    DiscoveryEvent,
    MalformedAnnouncement,
    Network,
    PeerFound,
    PeerGone,
    PeerTable,
    ResolvedService,
    build_txt,
    host_name,
    instance_name,
    parse_announcement,
    parse_ip,
    pick_address,
    truncate_utf8,
)

__all__ = [
    "ID_MAX_BYTES",
    "NAME_MAX_BYTES",
    "SERVICE_TYPE",
    "Announcement",
    "Discovery",
    "DiscoveryEvent",
    "DiscoveryUnavailable",
    "MalformedAnnouncement",
    "PeerFound",
    "PeerGone",
    "PeerTable",
    "ResolvedService",
    "build_txt",
    "host_name",
    "instance_name",
    "parse_announcement",
    "pick_address",
    "truncate_utf8",
]

log = logging.getLogger(__name__)

#: How long one service lookup may wait for answers, in seconds. Lookups usually hit the cache
#: (the records come with the PTR answer); a miss costs a few multicast queries.
LOOKUP_TIMEOUT: Final = 3.0
#: Concurrent lookups (each holds a worker thread while it waits).
LOOKUP_CONCURRENCY: Final = 4
#: Upper bound on stopping: goodbye packets (~0.4 s) plus closing zeroconf, in seconds.
STOP_TIMEOUT: Final = 5.0
#: Changes buffered between the browser thread and trio; beyond this a change is dropped (logged).
BROWSE_BUFFER: Final = 1024


class DiscoveryUnavailable(PeerfarmError):
    """mDNS cannot run here (no multicast-capable interface, address not local, socket refused).

    The daemon logs it ("mDNS unavailable, use --join") and carries on without discovery.
    """


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
                if "%" in interface or parse_ip(interface) is None:
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
