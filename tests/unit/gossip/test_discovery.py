"""Discovery's pure core: TXT records, instance names, address choice and the peer table."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import ifaddr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.errors import RemoteProtocolError, UsageError
from peerfarm.gossip import adapters
from peerfarm.gossip.discovery import (
    NAME_MAX_BYTES,
    SERVICE_TYPE,
    Announcement,
    Discovery,
    DiscoveryEvent,
    MalformedAnnouncement,
    PeerFound,
    PeerGone,
    PeerTable,
    ResolvedService,
    build_txt,
    instance_name,
    parse_announcement,
    pick_address,
)

LOCAL_NETS = [ipaddress.ip_network("127.0.0.0/8")]

ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)


def service(
    properties: dict[str, str] | dict[bytes, bytes | None],
    addresses: Sequence[str] = ("127.0.0.1",),
    name: str = f"x.{SERVICE_TYPE}",
) -> ResolvedService:
    props = {
        (k.encode() if isinstance(k, str) else k): (v.encode() if isinstance(v, str) else v)
        for k, v in properties.items()
    }
    return ResolvedService(name=name, properties=props, addresses=tuple(addresses))


@given(
    node_id=ids,
    farm_id=ids,
    protocol=st.integers(0, 65535),
    port=st.integers(1, 65535),
    name=st.text(max_size=100),
)
def test_txt_round_trips_and_name_is_truncated(
    node_id: str, farm_id: str, protocol: int, port: int, name: str
) -> None:
    txt = build_txt(node_id=node_id, farm_id=farm_id, protocol=protocol, port=port, name=name)
    assert set(txt) == {"id", "v", "port", "farm", "name"}
    got = parse_announcement(service(txt), LOCAL_NETS)
    assert got.node_id == node_id and got.farm_id == farm_id and got.protocol == protocol
    assert got.address == ("127.0.0.1", port)
    assert len(got.name.encode()) <= NAME_MAX_BYTES
    assert name.startswith(got.name)
    if len(name.encode()) <= NAME_MAX_BYTES:
        assert got.name == name


def test_name_truncation_never_splits_a_character() -> None:
    txt = build_txt(node_id="n", farm_id="f", protocol=1, port=1, name="é" * 40)
    assert txt["name"] == "é" * 31  # 62 bytes; a 64th byte would split the 32nd 'é'


@given(
    properties=st.dictionaries(
        st.sampled_from([b"id", b"v", b"port", b"farm", b"name", b"x"]) | st.binary(max_size=4),
        st.none()
        | st.binary(max_size=70)
        | st.sampled_from([b"1", b"65535", b"65536", b"0", b"-1", b" 1", b"1_0", b"\xc3\xa9"]),
    ),
    addresses=st.lists(st.sampled_from(["127.0.0.1", "fe80::1%2", "::1", "junk", ""])),
)
def test_parse_rejects_garbage_only_with_its_own_error(
    properties: dict[bytes, bytes | None], addresses: list[str]
) -> None:
    try:
        got = parse_announcement(service(properties, addresses), LOCAL_NETS)
    except MalformedAnnouncement as error:
        assert isinstance(error, RemoteProtocolError)
        return
    assert 1 <= got.address[1] <= 65535 and 0 <= got.protocol <= 65535
    assert got.address[0] in addresses


@pytest.mark.parametrize(
    ("properties", "field_name"),
    [
        ({"v": "1", "port": "1", "farm": "f"}, "'id'"),
        ({"id": "a b", "v": "1", "port": "1", "farm": "f"}, "'id'"),
        ({"id": "n", "v": "1", "port": "1"}, "'farm'"),
        ({"id": "n", "v": "x", "port": "1", "farm": "f"}, "'v'"),
        ({"id": "n", "v": "1", "port": "0", "farm": "f"}, "'port'"),
        ({"id": "n", "v": "1", "port": "65536", "farm": "f"}, "'port'"),
        ({"id": "n", "v": "+1", "port": "1", "farm": "f"}, "'v'"),
    ],
)
def test_malformed_record_error_names_the_field(
    properties: dict[str, str], field_name: str
) -> None:
    with pytest.raises(MalformedAnnouncement, match=field_name):
        parse_announcement(service(properties), LOCAL_NETS)


def test_instance_name_is_one_short_unique_label() -> None:
    long = instance_name("a.b" * 40, "0123456789abcdef")
    assert long.endswith("-01234567") and "." not in long and len(long.encode()) <= 63
    assert instance_name("", "abc") == "peerfarm-abc"
    assert instance_name("render", "aaaaaaaa1") != instance_name("render", "aaaaaaab1")


@pytest.mark.parametrize(
    ("candidates", "networks", "expected"),
    [
        (["10.0.0.5", "192.168.1.7"], ["192.168.1.0/24"], "192.168.1.7"),
        (["fe80::1%2", "10.0.0.5"], ["192.168.1.0/24"], "10.0.0.5"),
        (["127.0.0.1", "192.168.1.7"], ["10.0.0.0/8"], "192.168.1.7"),
        (["junk", "127.0.0.1"], ["127.0.0.0/8"], "127.0.0.1"),
        (["2001:db8::1", "fe80::1%3"], ["fe80::/64"], "fe80::1%3"),
        (["2001:db8::1", "fe80::1%3"], [], "2001:db8::1"),
        (["junk"], ["127.0.0.0/8"], None),
        ([], [], None),
    ],
)
def test_pick_address_prefers_reachable(
    candidates: list[str], networks: list[str], expected: str | None
) -> None:
    nets = [ipaddress.ip_network(n) for n in networks]
    assert pick_address(candidates, nets) == expected


def record(
    node_id: str,
    farm_id: str = "farm",
    port: int = 7000,
    address: str = "127.0.0.1",
    name: str = "peer",
) -> ResolvedService:
    txt = build_txt(node_id=node_id, farm_id=farm_id, protocol=1, port=port, name=name)
    return service(txt, (address,))


def announcement(node_id: str, port: int = 7000, address: str = "127.0.0.1") -> Announcement:
    return Announcement(
        node_id=node_id, farm_id="farm", protocol=1, address=(address, port), name="peer"
    )


def new_table() -> PeerTable:
    return PeerTable(node_id="me", farm_id="farm", local_networks=LOCAL_NETS)


def test_table_reports_peers_of_our_farm_only() -> None:
    table = new_table()
    for name, rec in [
        ("a", record("n1")),
        ("own", record("me")),
        ("x", record("n2", "other")),
        ("bad", service({"id": "n3"})),
    ]:
        ticket = table.changed(name)
        events = table.resolved(name, ticket, rec)
        assert events == ([PeerFound(announcement("n1"))] if name == "a" else [])
    assert table.removed("own") == [] and table.removed("x") == []
    assert table.removed("a") == [PeerGone("n1")]
    assert table.removed("a") == []


def test_table_ignores_stale_and_post_goodbye_lookups() -> None:
    table = new_table()
    first = table.changed("a")
    second = table.changed("a")
    assert table.resolved("a", first, record("n1", port=1)) == []
    assert table.resolved("a", second, record("n1", port=2)) == [
        PeerFound(announcement("n1", port=2))
    ]
    late = table.changed("a")
    assert table.removed("a") == [PeerGone("n1")]
    assert table.resolved("a", late, record("n1")) == []
    assert table.peers == {}


def test_table_updates() -> None:
    table = new_table()
    table.resolved("a", table.changed("a"), record("n1"))
    assert table.resolved("a", table.changed("a"), record("n1")) == []  # same record: quiet
    assert table.resolved("a", table.changed("a"), record("n1", address="127.0.0.2")) == [
        PeerFound(announcement("n1", address="127.0.0.2"))
    ]
    assert table.resolved("a", table.changed("a"), None) == []  # no answer: keep what we had
    assert table.resolved("a", table.changed("a"), record("n9")) == [
        PeerGone("n1"),
        PeerFound(announcement("n9")),
    ]
    table.resolved("b", table.changed("b"), record("n9", port=9))  # same node, second name
    assert table.removed("a") == []  # still announced under "b"
    assert table.resolved("b", table.changed("b"), service({"id": "n9"})) == [PeerGone("n9")]


op = st.tuples(
    st.sampled_from(["changed", "removed", "resolved"]),
    st.sampled_from("abc"),
    st.sampled_from(["me", "n1", "n2"]),
    st.integers(0, 8),
    st.booleans(),
)


@given(st.lists(op, max_size=40))
def test_table_events_always_describe_its_state(ops: list[tuple[str, str, str, int, bool]]) -> None:
    table = new_table()
    tickets: dict[str, list[int]] = {}
    present: dict[str, int] = {}
    for kind, name, node, pick, good in ops:
        if kind == "changed":
            tickets.setdefault(name, []).append(table.changed(name))
            events: list[DiscoveryEvent] = []
        elif kind == "removed":
            events = table.removed(name)
        else:
            issued = tickets.get(name) or [0]
            rec = record(node, port=1 + pick) if good else service({"junk": "1"})
            events = table.resolved(name, issued[pick % len(issued)], rec)
        for event in events:
            if isinstance(event, PeerFound):
                assert event.announcement.node_id != "me"
                present[event.announcement.node_id] = 1
            else:
                assert present.pop(event.node_id, None) is not None, "gone before found"
    assert set(present) == {a.node_id for a in table.peers.values()}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 0},
        {"port": 70000},
        {"node_id": "has space"},
        {"node_id": ""},
        {"farm_id": "x" * 65},
        {"protocol": -1},
        {"interfaces": ["eth0"]},
        {"interfaces": []},
    ],
)
def test_bad_arguments_are_usage_errors(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "node_id": "n",
        "farm_id": "f",
        "name": "x",
        "port": 1,
        "protocol": 1,
        **kwargs,
    }
    with pytest.raises(UsageError):
        Discovery(**args)  # type: ignore[arg-type]


def test_virtual_adapters_are_not_announced_unless_they_are_all_there_is() -> None:
    def adapter(name: str, ip: str, nice: str | None = None) -> ifaddr.Adapter:
        return ifaddr.Adapter(name, nice or name, [ifaddr.IP(ip, 24, name)])

    host = [
        adapter("lo", "127.0.0.1"),
        adapter("docker0", "172.17.0.1"),
        adapter("bridge100", "192.168.64.1"),
        adapter("{6A1F-GUID}", "172.29.0.1", "vEthernet (WSL)"),
        adapter("VirtualBox Host-Only Network", "192.168.56.1"),
        adapter("veth12ab", "10.200.0.1"),
        adapter("en0", "192.168.1.20"),
    ]
    addresses = adapters.host_addresses(host)
    assert [a.address for a in adapters.outward(addresses)] == ["192.168.1.20"]
    only_virtual = adapters.host_addresses(host[:3])
    assert [a.address for a in adapters.outward(only_virtual)] == ["172.17.0.1", "192.168.64.1"]
    assert not adapters.is_virtual("en0", "Ethernet") and adapters.is_virtual("x", "vEthernet (x)")
    assert not adapters.is_virtual("br0") and not adapters.is_virtual("bridge0")  # real LANs
