"""Which of this host's network adapters a peer announces and advertises itself on.

A workstation has adapters no other peer can reach: Docker's and libvirt's bridges, veth pairs,
Hyper-V's and WSL's ``vEthernet (...)``, VirtualBox and VMware host-only networks, macOS's
``bridge100`` and up (Internet Sharing, virtual machines). An address there, advertised as a peer's
gossip address or announced by mDNS, sends the farm to a network it cannot reach. So without
``--interface`` peerfarm skips those adapters (``is_virtual``, by name: ifaddr gives the system
name, and on Windows the friendly ``nice_name``), and uses one only when nothing else has an
IPv4 address. Naming an address with ``--interface`` (or ``--listen``) always wins.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import ifaddr

#: Adapter names (system or friendly, case-insensitive) of virtual networks, by prefix.
#: ``bridge1NN`` is macOS's Internet Sharing / virtual machine bridge (``bridge0``, the
#: Thunderbolt Bridge, and Linux's ``br0``, which carries the host's own LAN address when its
#: virtual machines are bridged, are real networks); ``br-`` is a Docker network.
VIRTUAL_NAME = re.compile(
    r"^(bridge1\d\d|vethernet|virtualbox|vboxnet|docker|veth|br-|virbr|vmnet|vmware|cni|"
    r"flannel|podman|lxcbr|lxdbr|hyper-v)",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class HostAddress:
    """One IPv4 address of this host and the adapter it sits on."""

    address: str
    prefix: int
    adapter: str
    virtual: bool


def is_virtual(*names: str) -> bool:
    """Whether an adapter with these names (system name, friendly name) is a virtual one."""
    return any(VIRTUAL_NAME.match(name.strip()) for name in names if name)


def host_addresses(adapters: Iterable[ifaddr.Adapter] | None = None) -> list[HostAddress]:
    """Every IPv4 address of this host (``adapters``: ifaddr's, read now when None)."""
    found: list[HostAddress] = []
    for adapter in ifaddr.get_adapters() if adapters is None else adapters:
        virtual = is_virtual(str(adapter.name), str(adapter.nice_name))
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                found.append(HostAddress(ip.ip, ip.network_prefix, adapter.nice_name, virtual))
    return found


def outward(addresses: Iterable[HostAddress]) -> list[HostAddress]:
    """The addresses other hosts can reach, best first: not loopback, not virtual; the
    virtual ones only when there is nothing else (pure)."""
    usable = [a for a in addresses if not ipaddress.ip_address(a.address).is_loopback]
    real = [a for a in usable if not a.virtual]
    return real or usable
