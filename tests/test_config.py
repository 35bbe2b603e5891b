"""Unit tests for the network config parser and validator (subnet.config).

Pure: no I/O. The cases mirror flannel-behaviour.md sections 1 and 10 ("Config / keys").
"""

from __future__ import annotations

import gc
import ipaddress
import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnet.config import (
    ConfigError,
    NetworkConfig,
    check_network_config,
    parse_config,
    strict_json_loads,
)

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
N4 = ipaddress.IPv4Network
N6 = ipaddress.IPv6Network


def checked(obj: dict[str, Any]) -> NetworkConfig:
    return check_network_config(parse_config(json.dumps(obj)))


def config_error(obj: dict[str, Any] | str) -> ConfigError:
    """The ConfigError raised by parsing and then checking `obj`."""
    text = obj if isinstance(obj, str) else json.dumps(obj)
    with pytest.raises(ConfigError) as info:
        check_network_config(parse_config(text))
    return info.value


# --- the cases flannel's own tests pin ------------------------------------------------------------


def test_lowercase_network_key_gets_flannel_defaults() -> None:
    cfg = check_network_config(parse_config('{"network": "10.3.0.0/16"}'))
    assert cfg.network == N4("10.3.0.0/16")
    assert cfg.subnet_len == 24
    assert cfg.subnet_min == V4("10.3.1.0")
    assert cfg.subnet_max == V4("10.3.255.0")
    assert cfg.families == (4,)


def test_ipv6_only_defaults() -> None:
    cfg = check_network_config(
        parse_config('{"enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": false}')
    )
    assert cfg.enable_ipv4 is False
    assert cfg.enable_ipv6 is True
    assert cfg.families == (6,)
    assert cfg.ipv6_network == N6("fc00::/48")
    assert cfg.ipv6_subnet_len == 64
    assert cfg.ipv6_subnet_min == V6("fc00:0:0:1::")
    assert cfg.ipv6_subnet_max == V6("fc00:0:0:ffff::")
    assert cfg.network is None
    assert cfg.subnet_len == 0


def test_explicit_ipv4_range_is_preserved() -> None:
    text = (
        '{"Network": "10.3.0.0/16", "SubnetMin": "10.3.5.0", "SubnetMax": "10.3.8.0", '
        '"SubnetLen": 28}'
    )
    parsed = parse_config(text)
    assert (parsed.subnet_min, parsed.subnet_max, parsed.subnet_len) == (
        V4("10.3.5.0"),
        V4("10.3.8.0"),
        28,
    )
    cfg = check_network_config(parsed)
    assert (cfg.subnet_min, cfg.subnet_max, cfg.subnet_len) == (
        V4("10.3.5.0"),
        V4("10.3.8.0"),
        28,
    )


def test_explicit_ipv6_range_is_preserved() -> None:
    text = (
        '{"EnableIPv6": true, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::", '
        '"IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124, "Network": "10.3.0.0/16"}'
    )
    parsed = parse_config(text)
    assert parsed.ipv6_subnet_min == V6("fc00:0:0:1::")
    assert parsed.ipv6_subnet_max == V6("fc00:0:0:f::")
    assert parsed.ipv6_subnet_len == 124
    cfg = check_network_config(parsed)
    assert (cfg.ipv6_subnet_min, cfg.ipv6_subnet_max, cfg.ipv6_subnet_len) == (
        V6("fc00:0:0:1::"),
        V6("fc00:0:0:f::"),
        124,
    )
    assert cfg.families == (4, 6)


def test_dual_stack_defaults() -> None:
    cfg = checked({"Network": "10.42.0.0/16", "EnableIPv6": True, "IPv6Network": "fd00:42::/56"})
    assert cfg.families == (4, 6)
    assert (cfg.subnet_len, cfg.subnet_min, cfg.subnet_max) == (
        24,
        V4("10.42.1.0"),
        V4("10.42.255.0"),
    )
    assert (cfg.ipv6_subnet_len, cfg.ipv6_subnet_min, cfg.ipv6_subnet_max) == (
        64,
        V6("fd00:42:0:1::"),
        V6("fd00:42:0:ff::"),
    )


# --- Go JSON semantics ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["Network", "network", "NETWORK", "nEtWoRk"])
def test_keys_match_case_insensitively(key: str) -> None:
    cfg = parse_config(json.dumps({key: "10.9.0.0/16", "subnetLEN": 26, "BACKEND": {}}))
    assert cfg.network == N4("10.9.0.0/16")
    assert cfg.subnet_len == 26
    assert cfg.backend_type == ""


def test_last_spelling_of_a_key_wins() -> None:
    cfg = parse_config('{"Network": "10.1.0.0/16", "network": "10.2.0.0/16"}')
    assert cfg.network == N4("10.2.0.0/16")


def test_unknown_keys_are_ignored() -> None:
    plain = parse_config('{"Network": "10.3.0.0/16"}')
    noisy = parse_config(
        '{"Network": "10.3.0.0/16", "Foo": [1, 2], "MacPrefix": "0E-2A", "comment": null}'
    )
    assert noisy == plain


def test_null_leaves_the_default() -> None:
    cfg = parse_config('{"Network": "10.3.0.0/16", "EnableIPv4": null, "SubnetLen": null}')
    assert cfg.enable_ipv4 is True
    assert cfg.subnet_len == 0


def test_enable_nftables_is_parsed() -> None:
    assert parse_config('{"EnableNFTables": true}').enable_nftables is True
    assert parse_config("{}").enable_nftables is False


def test_host_bits_of_network_are_masked() -> None:
    assert parse_config('{"Network": "10.3.7.9/16"}').network == N4("10.3.0.0/16")


def test_bytes_input_is_accepted() -> None:
    assert parse_config(b'{"Network": "10.3.0.0/16"}').network == N4("10.3.0.0/16")


@pytest.mark.parametrize(("key", "value"), [("SubnetMin", "0.0.0.0"), ("SubnetMax", "0.0.0.0")])
def test_zero_ipv4_subnet_bound_means_unset(key: str, value: str) -> None:
    parsed = parse_config(json.dumps({"Network": "10.3.0.0/16", key: value}))
    assert parsed.subnet_min is None
    assert parsed.subnet_max is None
    cfg = check_network_config(parsed)
    assert cfg.subnet_min == V4("10.3.1.0")
    assert cfg.subnet_max == V4("10.3.255.0")


def test_zero_ipv6_subnet_bound_means_unset() -> None:
    parsed = parse_config(
        '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fc00::/48", '
        '"IPv6SubnetMin": "::", "IPv6SubnetMax": "::"}'
    )
    assert parsed.ipv6_subnet_min is None
    assert parsed.ipv6_subnet_max is None
    cfg = check_network_config(parsed)
    assert cfg.ipv6_subnet_min == V6("fc00:0:0:1::")


def test_check_returns_a_new_config_and_leaves_the_input_alone() -> None:
    parsed = parse_config('{"Network": "10.3.0.0/16"}')
    cfg = check_network_config(parsed)
    assert cfg is not parsed
    assert parsed.subnet_len == 0
    assert parsed.subnet_min is None
    assert cfg.subnet_len == 24


# --- backend type ---------------------------------------------------------------------------------


def test_missing_backend_defaults_to_vxlan() -> None:
    cfg = parse_config('{"Network": "10.3.0.0/16"}')
    assert cfg.backend_type == "vxlan"
    assert cfg.backend == {}


def test_backend_without_type_gives_empty_type() -> None:
    cfg = parse_config('{"Network": "10.3.0.0/16", "Backend": {"VNI": 4}}')
    assert cfg.backend_type == ""
    assert cfg.backend == {"VNI": 4}


def test_backend_type_key_is_case_insensitive_and_value_kept_verbatim() -> None:
    cfg = parse_config('{"Backend": {"type": "host-gw", "Port": 1}}')
    assert cfg.backend_type == "host-gw"
    assert cfg.backend == {"type": "host-gw", "Port": 1}
    assert parse_config('{"Backend": {"TYPE": "VXLAN"}}').backend_type == "VXLAN"


def test_backend_type_must_be_a_string() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('{"Backend": {"Type": 5}}')
    assert info.value.field == "Backend.Type"
    assert '"vxlan"' in str(info.value)


# --- validation errors name the field and show a valid value --------------------------------------


@pytest.mark.parametrize("obj", [{}, {"Network": "0.0.0.0/0"}, {"SubnetLen": 24}])
def test_missing_or_empty_network_is_rejected(obj: dict[str, Any]) -> None:
    err = config_error(obj)
    assert err.field == "Network"
    assert "10.244.0.0/16" in str(err)


def test_ipv6_cidr_as_network_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config('{"Network": "fc00::/48"}')
    assert info.value.field == "Network"
    assert "10.244.0.0/16" in str(info.value)


@pytest.mark.parametrize("value", ["10.3.0.0", "10.3.0.0/33", "banana", "", "10.3.0/16"])
def test_malformed_network_is_rejected(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps({"Network": value}))
    assert info.value.field == "Network"
    assert "10.244.0.0/16" in str(info.value)


def test_missing_ipv6_network_is_rejected() -> None:
    err = config_error({"Network": "10.3.0.0/16", "EnableIPv6": True})
    assert err.field == "IPv6Network"
    assert "2001:db8:42::/56" in str(err)


def test_both_families_disabled_is_rejected() -> None:
    err = config_error({"EnableIPv4": False, "EnableIPv6": False})
    assert err.field == "EnableIPv4"
    assert "EnableIPv6" in str(err)


@pytest.mark.parametrize("length", [31, 32, 40])
def test_subnet_len_above_30_is_rejected(length: int) -> None:
    err = config_error({"Network": "10.3.0.0/16", "SubnetLen": length})
    assert err.field == "SubnetLen"
    assert "30" in str(err)


def test_subnet_len_30_is_accepted() -> None:
    cfg = checked({"Network": "10.3.0.0/16", "SubnetLen": 30})
    assert (cfg.subnet_len, cfg.subnet_min, cfg.subnet_max) == (
        30,
        V4("10.3.0.4"),
        V4("10.3.255.252"),
    )


@pytest.mark.parametrize("length", [8, 16, 17])
def test_subnet_len_below_prefix_plus_two_is_rejected(length: int) -> None:
    err = config_error({"Network": "10.3.0.0/16", "SubnetLen": length})
    assert err.field == "SubnetLen"
    assert "18" in str(err)  # the smallest valid value


def test_subnet_len_prefix_plus_two_gives_four_subnets() -> None:
    cfg = checked({"Network": "10.3.0.0/16", "SubnetLen": 18})
    assert cfg.subnet_min == V4("10.3.64.0")
    assert cfg.subnet_max == V4("10.3.192.0")


@pytest.mark.parametrize(
    ("network", "length", "lo", "hi"),
    [
        ("10.0.0.0/8", 24, "10.0.1.0", "10.255.255.0"),
        ("10.3.0.0/16", 24, "10.3.1.0", "10.3.255.0"),
        ("10.3.0.0/22", 24, "10.3.1.0", "10.3.3.0"),
        ("10.3.0.0/23", 25, "10.3.0.128", "10.3.1.128"),
        ("10.3.0.0/28", 30, "10.3.0.4", "10.3.0.12"),
    ],
)
def test_default_subnet_len_min_and_max(network: str, length: int, lo: str, hi: str) -> None:
    cfg = checked({"Network": network})
    assert (cfg.subnet_len, cfg.subnet_min, cfg.subnet_max) == (length, V4(lo), V4(hi))


@pytest.mark.parametrize("network", ["10.3.0.0/29", "10.3.0.0/30", "10.3.0.0/32"])
def test_network_longer_than_28_without_subnet_len_is_rejected(network: str) -> None:
    err = config_error({"Network": network})
    assert err.field == "Network"
    assert "/28" in str(err)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SubnetMin", "10.4.1.0"),
        ("SubnetMax", "10.4.1.0"),
        ("SubnetMin", "9.255.255.0"),
        ("SubnetMax", "192.168.0.0"),
    ],
)
def test_subnet_bound_outside_network_is_rejected(key: str, value: str) -> None:
    err = config_error({"Network": "10.3.0.0/16", key: value})
    assert err.field == key
    assert value in str(err)
    assert "10.3.0.0/16" in str(err)  # the network a valid value must lie in


@pytest.mark.parametrize(
    ("key", "value"), [("SubnetMin", "10.3.1.128"), ("SubnetMax", "10.3.20.1")]
)
def test_misaligned_subnet_bound_is_rejected(key: str, value: str) -> None:
    err = config_error({"Network": "10.3.0.0/16", key: value})
    assert err.field == key
    assert value in str(err)
    assert "/24" in str(err)


def test_misaligned_subnet_bound_message_suggests_an_aligned_value() -> None:
    err = config_error({"Network": "10.3.0.0/16", "SubnetMin": "10.3.1.128"})
    assert "10.3.1.0" in str(err)


def test_subnet_min_above_max_is_not_checked() -> None:  # flannel does not check it either
    cfg = checked({"Network": "10.3.0.0/16", "SubnetMin": "10.3.9.0", "SubnetMax": "10.3.2.0"})
    assert (cfg.subnet_min, cfg.subnet_max) == (V4("10.3.9.0"), V4("10.3.2.0"))


@pytest.mark.parametrize(
    ("network", "length", "lo", "hi"),
    [
        ("fc00::/48", 64, "fc00:0:0:1::", "fc00:0:0:ffff::"),
        ("fc00::/62", 64, "fc00:0:0:1::", "fc00:0:0:3::"),
        ("fc00::/63", 65, "fc00:0:0:0:8000::", "fc00:0:0:1:8000::"),
        ("fc00::/124", 126, "fc00::4", "fc00::c"),
    ],
)
def test_ipv6_defaults(network: str, length: int, lo: str, hi: str) -> None:
    cfg = checked({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": network})
    assert (cfg.ipv6_subnet_len, cfg.ipv6_subnet_min, cfg.ipv6_subnet_max) == (
        length,
        V6(lo),
        V6(hi),
    )


@pytest.mark.parametrize(
    ("extra", "field", "hint"),
    [
        ({"IPv6Network": "fc00::/125"}, "IPv6Network", "/124"),
        ({"IPv6Network": "fc00::/48", "IPv6SubnetLen": 127}, "IPv6SubnetLen", "126"),
        ({"IPv6Network": "fc00::/48", "IPv6SubnetLen": 49}, "IPv6SubnetLen", "50"),
        ({"IPv6Network": "::/0"}, "IPv6Network", "2001:db8:42::/56"),
        (
            {"IPv6Network": "fc00::/48", "IPv6SubnetMin": "fd00:0:0:1::"},
            "IPv6SubnetMin",
            "fc00::/48",
        ),
        (
            {"IPv6Network": "fc00::/48", "IPv6SubnetMax": "fc00:0:0:1::1"},
            "IPv6SubnetMax",
            "/64",
        ),
    ],
)
def test_ipv6_validation_errors(extra: dict[str, Any], field: str, hint: str) -> None:
    err = config_error({"EnableIPv4": False, "EnableIPv6": True, **extra})
    assert err.field == field
    assert hint in str(err)


# --- wrong JSON types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("Network", 10, "10.244.0.0/16"),
        ("Network", ["10.3.0.0/16"], "10.244.0.0/16"),
        ("IPv6Network", "10.3.0.0/16", "2001:db8:42::/56"),
        ("EnableIPv4", "true", "true or false"),
        ("EnableIPv6", 1, "true or false"),
        ("EnableNFTables", "no", "true or false"),
        ("SubnetLen", "24", "24"),
        ("SubnetLen", -1, "24"),
        ("SubnetLen", 24.5, "24"),
        ("SubnetLen", True, "24"),
        ("IPv6SubnetLen", "64", "64"),
        ("SubnetMin", 5, "10.244.1.0"),
        ("SubnetMin", "10.3.1", "10.244.1.0"),
        ("SubnetMin", "fc00::", "10.244.1.0"),
        ("SubnetMax", "10.3.0.0/24", "10.244.255.0"),
        ("IPv6SubnetMin", "10.3.1.0", "2001:db8:42:1::"),
        ("IPv6SubnetMax", False, "2001:db8:42:ff::"),
        ("Backend", "vxlan", '{"Type": "vxlan"}'),
        ("Backend", [], '{"Type": "vxlan"}'),
    ],
)
def test_wrong_json_type_names_field_and_example(key: str, value: Any, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps({key: value}))
    assert info.value.field == key
    assert key in str(info.value)
    assert hint in str(info.value)


@pytest.mark.parametrize("text", ["", "{", "not json", '{"Network": }', b"\xff\xfe\x00"])
def test_invalid_json_is_a_config_error(text: str | bytes) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.field == "(json)"
    assert '"Network": "10.244.0.0/16"' in str(info.value)


@pytest.mark.parametrize("text", ["[]", "null", '"10.3.0.0/16"', "42", "true"])
def test_non_object_json_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.field == "(json)"
    assert "10.244.0.0/16" in str(info.value)


def test_config_error_is_a_value_error_with_field() -> None:
    err = ConfigError("SubnetLen", "too long")
    assert isinstance(err, ValueError)
    assert err.field == "SubnetLen"
    assert str(err) == "network config: SubnetLen: too long"


def test_deeply_nested_json_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_config('{"Network": "10.3.0.0/16", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_standard_json_constants_are_rejected(constant: str) -> None:
    with pytest.raises(ConfigError):
        parse_config('{"Network": "10.3.0.0/16", "Comment": ' + constant + "}")


@pytest.mark.parametrize(
    ("key", "value"),
    [("IPv6SubnetMin", "fc00:0:0:1::%eth0"), ("IPv6Network", "fc00::%eth0/48")],
)
def test_ipv6_address_with_zone_is_rejected(key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(json.dumps({key: value}))
    assert info.value.field == key


# --- properties -----------------------------------------------------------------------------------

_KEYS = [
    "Network", "IPv6Network", "EnableIPv4", "EnableIPv6", "EnableNFTables", "SubnetLen",
    "SubnetMin", "SubnetMax", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "Backend",
]  # fmt: skip

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(
        ["10.3.0.0/16", "10.3.1.0", "fc00::/48", "fc00:0:0:1::", "0.0.0.0", "::", "::/0"]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_config_objects = st.dictionaries(
    st.sampled_from(_KEYS).map(lambda k: k.swapcase() if len(k) % 3 == 0 else k)
    | st.text(max_size=8),
    _json_values
    | st.integers(0, 130)
    | st.ip_addresses(v=4).map(str)
    | st.ip_addresses(v=6).map(str),
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80) | st.binary(max_size=40))
def test_parse_config_raises_only_config_error_on_any_text(text: str | bytes) -> None:
    try:
        cfg = parse_config(text)
    except ConfigError as err:
        assert err.field
        return
    assert isinstance(cfg, NetworkConfig)


@settings(max_examples=200, deadline=None)
@given(_config_objects)
def test_parse_and_check_raise_only_config_error_on_any_object(obj: dict[str, Any]) -> None:
    try:
        cfg = check_network_config(parse_config(json.dumps(obj)))
    except ConfigError as err:
        assert err.field
        assert str(err).startswith(f"network config: {err.field}: ")
        return
    assert cfg.families
    for version in cfg.families:
        fam = cfg.family(version)
        assert fam.network is not None
        assert fam.subnet_min is not None and fam.subnet_min in fam.network
        assert fam.subnet_max is not None and fam.subnet_max in fam.network
        assert fam.network.prefixlen + 2 <= fam.subnet_len <= fam.network.max_prefixlen - 2


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 28))
def test_default_range_is_first_to_last_subnet(addr: int, prefix: int) -> None:
    net = N4((addr, prefix), strict=False)
    cfg = checked({"Network": str(net)})
    size = 1 << (32 - cfg.subnet_len)
    assert cfg.subnet_len == (24 if prefix <= 22 else prefix + 2)
    assert cfg.subnet_min is not None and cfg.subnet_max is not None
    assert int(cfg.subnet_min) == int(net.network_address) + size
    assert int(cfg.subnet_max) == int(net.broadcast_address) + 1 - size


def test_strict_json_loads_takes_text_and_bytes_as_json_loads_does() -> None:
    assert strict_json_loads('{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    assert strict_json_loads(b'{"a": 1}') == {"a": 1}
    assert strict_json_loads('{"a": "é"}'.encode("utf-16")) == {"a": "é"}
    assert strict_json_loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # UTF-8 BOM in bytes: fine
    with pytest.raises(ValueError, match="BOM"):
        strict_json_loads('\ufeff{"a": 1}')  # ...but not in text, as json.loads
    for bad in ('{"a": NaN}', '{"a": 1e999}', "{", b"\xff"):
        with pytest.raises(ValueError):
            strict_json_loads(bad)


def test_strict_json_loads_leaves_nothing_behind() -> None:
    """json.loads with hooks left a few hundred blocks behind for good over its first
    thousand calls (CPython 3.11), which kept freed start-up memory resident."""
    texts = [f'{{"PublicIP": "198.18.0.{i % 250}", "VNI": {i}, "x": 1.5}}' for i in range(2000)]
    gc.collect()
    before = sys.getallocatedblocks()
    decoded = [strict_json_loads(t) for t in texts]
    del decoded
    gc.collect()
    assert sys.getallocatedblocks() - before < 100
