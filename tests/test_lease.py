"""Unit tests for the subnet key and lease value codecs (subnet.lease).

Both formats are shared with Go flanneld on the same etcd, so the expected values are the exact
strings of flannel-behaviour.md sections 2.2, 2.3 and 10.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnet.lease import (
    Lease,
    LeaseAttrs,
    LeaseFormatError,
    go_json,
    make_subnet_key,
    parse_subnet_key,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
N4 = ipaddress.IPv4Network
N6 = ipaddress.IPv6Network

BARE = b'{"PublicIP":"1.2.3.4","PublicIPv6":null}'
VXLAN = (
    b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
    b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'
)
HOST_GW = b'{"PublicIP":"10.0.0.7","PublicIPv6":null,"BackendType":"host-gw"}'
DUAL = (
    b'{"PublicIP":"192.168.64.3","PublicIPv6":"fd00:64::3","BackendType":"vxlan",'
    b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},'
    b'"BackendV6Data":{"VNI":1,"VtepMAC":"7a:1b:00:2c:3d:4e"}}'
)


# --- subnet keys ----------------------------------------------------------------------------------


def test_ipv4_key_parses_and_reserialises() -> None:
    v4, v6 = parse_subnet_key("10.12.13.0-24")
    assert v4 == N4("10.12.13.0/24")
    assert v6 is None
    assert make_subnet_key(v4, v6) == "10.12.13.0-24"


def test_dual_stack_key_parses_and_reserialises() -> None:
    v4, v6 = parse_subnet_key("10.12.13.0-24&fd00:12:13::-56")
    assert v4 == N4("10.12.13.0/24")
    assert v6 == N6("fd00:12:13::/56")
    assert make_subnet_key(v4, v6) == "10.12.13.0-24&fd00:12:13::-56"


def test_ipv6_only_key_has_the_empty_ipv4_part() -> None:
    assert parse_subnet_key("0.0.0.0-0&fd00::-64") == (None, N6("fd00::/64"))
    assert make_subnet_key(None, N6("fd00::/64")) == "0.0.0.0-0&fd00::-64"


def test_full_etcd_key_matches_at_the_end() -> None:
    key = "/coreos.com/network/subnets/10.5.72.0-24"
    assert parse_subnet_key(key) == (N4("10.5.72.0/24"), None)
    assert parse_subnet_key("/x/subnets/10.5.72.0-24&fd00:5::-64") == (
        N4("10.5.72.0/24"),
        N6("fd00:5::/64"),
    )


@pytest.mark.parametrize(
    "key",
    [
        "10",
        "10.12.13.0",
        "10.12.13-24",
        "10.12.13.300-24",
        "10.12.13.0-24hi",
        "&2001::-56",
        "10.12.13.0-24&:12:13:-56",
        "10.12.13.0-24&20011::-56",
        "10.12.13.0-24&2001-56",
        "10.12.13.0-24&2001::",
        "10.12.13.0-24&2001::-56hi",
        "",
        "/coreos.com/network/subnets/",
        "10.12.13.0-24/",
        "010.12.13.0-24",
    ],
)
def test_flannel_rejected_keys(key: str) -> None:
    with pytest.raises(LeaseFormatError):
        parse_subnet_key(key)


@pytest.mark.parametrize("key", ["10.12.13.0-32", "10.12.13.0-33", "10.12.13.0-100"])
def test_ipv4_prefix_32_and_above_is_rejected(key: str) -> None:
    with pytest.raises(LeaseFormatError):
        parse_subnet_key(key)


@pytest.mark.parametrize("key", ["10.12.13.0-24&fd00::-128", "10.12.13.0-24&fd00::-200"])
def test_ipv6_prefix_128_and_above_is_rejected(key: str) -> None:
    with pytest.raises(LeaseFormatError):
        parse_subnet_key(key)


def test_longest_accepted_prefixes() -> None:
    assert parse_subnet_key("10.12.13.2-31") == (N4("10.12.13.2/31"), None)
    assert parse_subnet_key("10.12.13.0-24&fd00::2-127") == (
        N4("10.12.13.0/24"),
        N6("fd00::2/127"),
    )


@pytest.mark.parametrize("key", ["10.12.13.0-24&FD00::-56", "10.12.13.0-24&fd00:AB::-56"])
def test_uppercase_ipv6_hex_is_rejected(key: str) -> None:
    with pytest.raises(LeaseFormatError):
        parse_subnet_key(key)


def test_leading_text_is_not_anchored() -> None:  # flannel matches only at the end
    assert parse_subnet_key("garbage-10.5.72.0-24") == (N4("10.5.72.0/24"), None)


@pytest.mark.parametrize(
    "key", ["10.12.13.0-24\n", "10.12.13.0-\u0662\u0664", "10.12.13.0-24&fd00::-\u0665\u0666"]
)
def test_trailing_newline_and_non_ascii_digits_are_rejected(key: str) -> None:
    with pytest.raises(LeaseFormatError):
        parse_subnet_key(key)


def test_make_subnet_key_uses_canonical_ipv6_text() -> None:
    v6 = N6("2001:0db8:0000:0000:0001:0000:0000:0000/112")
    assert make_subnet_key(N4("10.1.2.0/24"), v6) == "10.1.2.0-24&2001:db8:0:0:1::-112"


def test_make_subnet_key_needs_a_subnet() -> None:
    with pytest.raises(ValueError):
        make_subnet_key(None, None)


def test_lease_key_property() -> None:
    lease = Lease(N4("10.5.72.0/24"), N6("fd00:5::/64"), LeaseAttrs())
    assert lease.key == "10.5.72.0-24&fd00:5::-64"
    assert Lease(N4("10.5.72.0/24"), None, LeaseAttrs()).key == "10.5.72.0-24"


def test_lease_format_error_is_a_value_error() -> None:
    assert issubclass(LeaseFormatError, ValueError)


# --- lease values: exact bytes --------------------------------------------------------------------


def test_bare_attrs_encode_exactly() -> None:
    assert LeaseAttrs(public_ip=V4("1.2.3.4")).encode() == BARE


def test_default_attrs_publish_unset_public_ip() -> None:
    assert LeaseAttrs().encode() == b'{"PublicIP":"0.0.0.0","PublicIPv6":null}'


def test_vxlan_attrs_encode_exactly() -> None:
    attrs = LeaseAttrs(
        public_ip=V4("192.168.64.3"),
        backend_type="vxlan",
        backend_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"},
    )
    assert attrs.encode() == VXLAN


def test_host_gw_attrs_have_no_backend_data() -> None:
    attrs = LeaseAttrs(public_ip=V4("10.0.0.7"), backend_type="host-gw")
    assert attrs.encode() == HOST_GW


def test_dual_stack_attrs_encode_exactly() -> None:
    attrs = LeaseAttrs(
        public_ip=V4("192.168.64.3"),
        public_ipv6=V6("fd00:64:0:0::3"),
        backend_type="vxlan",
        backend_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"},
        backend_v6_data={"VNI": 1, "VtepMAC": "7a:1b:00:2c:3d:4e"},
    )
    assert attrs.encode() == DUAL


@pytest.mark.parametrize("value", [BARE, VXLAN, HOST_GW, DUAL])
def test_decode_encode_round_trip_is_byte_exact(value: bytes) -> None:
    assert LeaseAttrs.decode(value).encode() == value
    assert LeaseAttrs.decode(value.decode()).encode() == value


def test_decode_vxlan_example() -> None:
    attrs = LeaseAttrs.decode(VXLAN)
    assert attrs == LeaseAttrs(
        public_ip=V4("192.168.64.3"),
        public_ipv6=None,
        backend_type="vxlan",
        backend_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"},
        backend_v6_data=None,
    )


def test_decode_matches_field_names_case_insensitively() -> None:
    text = (
        '{"publicip": "1.2.3.4", "PUBLICIPV6": "fd00::1", "backendTYPE": "vxlan", '
        '"backenddata": {"VNI": 2, "VtepMAC": "aa:bb:cc:dd:ee:ff"}, '
        '"BACKENDV6DATA": {"VNI": 2, "VtepMAC": "aa:bb:cc:dd:ee:00"}, "Unknown": [1]}'
    )
    assert LeaseAttrs.decode(text) == LeaseAttrs(
        public_ip=V4("1.2.3.4"),
        public_ipv6=V6("fd00::1"),
        backend_type="vxlan",
        backend_data={"VNI": 2, "VtepMAC": "aa:bb:cc:dd:ee:ff"},
        backend_v6_data={"VNI": 2, "VtepMAC": "aa:bb:cc:dd:ee:00"},
    )


def test_decode_missing_fields_give_defaults() -> None:
    assert LeaseAttrs.decode("{}") == LeaseAttrs()
    assert LeaseAttrs.decode('{"PublicIP": null, "PublicIPv6": null}') == LeaseAttrs()


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"not json",
        b'{"PublicIP":',
        b"[]",
        b"null",
        b'"1.2.3.4"',
        b"\xff\xff",
        b'{"PublicIP": 5}',
        b'{"PublicIP": "1.2.3"}',
        b'{"PublicIP": "1.2.3.4.5"}',
        b'{"PublicIP": "fd00::1"}',
        b'{"PublicIP": ["1.2.3.4"]}',
        b'{"PublicIPv6": "1.2.3.4"}',
        b'{"PublicIPv6": "fd00::g"}',
        b'{"PublicIPv6": 6}',
        b'{"BackendType": 1}',
        b'{"BackendType": {"Type": "vxlan"}}',
    ],
)
def test_malformed_values_raise_lease_format_error(value: bytes) -> None:
    with pytest.raises(LeaseFormatError):
        LeaseAttrs.decode(value)


def test_deeply_nested_value_raises_lease_format_error() -> None:
    with pytest.raises(LeaseFormatError):
        LeaseAttrs.decode('{"PublicIP": "1.2.3.4", "BackendData": ' + "[" * 100_000 + "}")


def test_nan_in_backend_data_is_rejected() -> None:
    with pytest.raises(LeaseFormatError):
        LeaseAttrs.decode('{"PublicIP": "1.2.3.4", "BackendData": {"VNI": NaN}}')


def test_public_ipv6_with_zone_is_rejected() -> None:
    with pytest.raises(LeaseFormatError):
        LeaseAttrs.decode('{"PublicIP": "1.2.3.4", "PublicIPv6": "fe80::1%eth0"}')


# --- Go's JSON escaping ---------------------------------------------------------------------------


def test_go_json_escapes_html_characters() -> None:
    assert go_json("<a&b>") == '"\\u003ca\\u0026b\\u003e"'
    assert go_json({"k": "\u2028\u2029"}) == '{"k":"\\u2028\\u2029"}'


def test_go_json_is_compact_utf8() -> None:
    assert go_json({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'


def test_encode_escapes_html_in_backend_fields() -> None:
    attrs = LeaseAttrs(public_ip=V4("1.2.3.4"), backend_type="a<b", backend_data={"x": "&>"})
    assert attrs.encode() == (
        b'{"PublicIP":"1.2.3.4","PublicIPv6":null,"BackendType":"a\\u003cb",'
        b'"BackendData":{"x":"\\u0026\\u003e"}}'
    )
    assert LeaseAttrs.decode(attrs.encode()) == attrs


# --- properties -----------------------------------------------------------------------------------

_v4_nets = st.builds(
    lambda addr, plen: N4((addr, plen), strict=False),
    st.integers(0, 2**32 - 1),
    st.integers(0, 31),
).filter(lambda n: not (n.prefixlen == 0 and int(n.network_address) == 0))
_v6_nets = st.builds(
    lambda addr, plen: N6((addr, plen), strict=False),
    st.integers(0, 2**128 - 1),
    st.integers(0, 127),
)


@settings(max_examples=200, deadline=None)
@given(_v4_nets, st.none() | _v6_nets, st.sampled_from(["", "/coreos.com/network/subnets/"]))
def test_subnet_key_round_trip(v4: N4, v6: N6 | None, prefix: str) -> None:
    key = make_subnet_key(v4, v6)
    assert parse_subnet_key(prefix + key) == (v4, v6)
    assert make_subnet_key(*parse_subnet_key(key)) == key


@settings(max_examples=200, deadline=None)
@given(_v6_nets)
def test_ipv6_only_subnet_key_round_trip(v6: N6) -> None:
    key = make_subnet_key(None, v6)
    assert key.startswith("0.0.0.0-0&")
    assert parse_subnet_key(key) == (None, v6)


_key_text = st.text(alphabet="0123456789.-&:abcdefABX/\n", max_size=40) | st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(_key_text)
def test_parse_subnet_key_raises_only_lease_format_error(key: str) -> None:
    try:
        v4, v6 = parse_subnet_key(key)
    except LeaseFormatError:
        return
    assert v4 is None or (isinstance(v4, N4) and v4.prefixlen <= 31)
    assert v6 is None or (isinstance(v6, N6) and v6.prefixlen <= 127)
    assert v4 is not None or v6 is not None


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
_lease_objects = st.dictionaries(
    st.sampled_from(
        ["PublicIP", "publicipv6", "BackendType", "BACKENDDATA", "BackendV6Data", "other"]
    ),
    _json | st.ip_addresses().map(str),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60) | st.binary(max_size=40) | _lease_objects.map(json.dumps))
def test_decode_raises_only_lease_format_error(value: str | bytes) -> None:
    try:
        attrs = LeaseAttrs.decode(value)
    except LeaseFormatError:
        return
    assert isinstance(attrs.public_ip, V4)
    assert attrs.public_ipv6 is None or isinstance(attrs.public_ipv6, V6)
    assert isinstance(attrs.backend_type, str)


_data = st.none() | st.dictionaries(st.text(max_size=8), _json, max_size=4) | _json


@settings(max_examples=200, deadline=None)
@given(
    st.ip_addresses(v=4),
    st.none() | st.ip_addresses(v=6),
    st.text(max_size=12),
    _data,
    _data,
)
def test_lease_attrs_encode_decode_round_trip(
    public_ip: V4, public_ipv6: V6 | None, backend_type: str, data: Any, v6_data: Any
) -> None:
    attrs = LeaseAttrs(public_ip, public_ipv6, backend_type, data, v6_data)
    encoded = attrs.encode()
    decoded = LeaseAttrs.decode(encoded)
    assert decoded == attrs
    assert decoded.encode() == encoded
    assert json.loads(encoded)["PublicIP"] == str(public_ip)
    assert list(json.loads(encoded))[:2] == ["PublicIP", "PublicIPv6"]


def test_key_naming_no_subnet_is_rejected() -> None:
    with pytest.raises(LeaseFormatError, match="names no subnet"):
        parse_subnet_key("/coreos.com/network/subnets/0.0.0.0-0")
