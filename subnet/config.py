"""The flannel network configuration: net-conf.json in Kubernetes, `<prefix>/config` in etcd.

Parsing follows Go's `encoding/json` rules because operators' existing configs were written for Go
flanneld: keys match case-insensitively (the last of several spellings wins), unknown keys are
ignored, a JSON `null` leaves the default. Validation and defaulting (`check_network_config`) follow
flannel's `pkg/subnet/config.go` CheckNetworkConfig, which flannel applies in etcd mode only.

Every error is a `ConfigError` that names the offending field and says what a valid value looks
like.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_BACKEND = (
    # flannel's code says udp; its docs and flanneld-py say vxlan (README "Compared with flanneld")
    "vxlan"
)
SUPPORTED_BACKENDS = ("vxlan", "host-gw", "alloc")
"""Backend types flanneld-py implements; any other `Backend.Type` is refused at start."""


class ConfigError(ValueError):
    """An invalid network config; `field` is the config key at fault (e.g. "SubnetLen")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"network config: {field}: {message}")
        self.field = field


@dataclass(frozen=True)
class NetworkConfig:
    """The parsed network config (flannel `pkg/subnet/config.go` Config).

    Prefix lengths of 0 and addresses of None mean "not given"; `check_network_config` fills them.
    `backend` is the raw `Backend` JSON object (keys as written), handed to the backend to parse.
    """

    network: ipaddress.IPv4Network | None = None
    ipv6_network: ipaddress.IPv6Network | None = None
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    enable_nftables: bool = False
    subnet_len: int = 0
    subnet_min: ipaddress.IPv4Address | None = None
    subnet_max: ipaddress.IPv4Address | None = None
    ipv6_subnet_len: int = 0
    ipv6_subnet_min: ipaddress.IPv6Address | None = None
    ipv6_subnet_max: ipaddress.IPv6Address | None = None
    backend_type: str = DEFAULT_BACKEND
    backend: dict[str, Any] = field(default_factory=dict)

    @property
    def families(self) -> tuple[int, ...]:
        """The enabled IP versions, in flannel's order: (4,), (6,) or (4, 6)."""
        return tuple(v for v, on in ((4, self.enable_ipv4), (6, self.enable_ipv6)) if on)

    def family(self, version: int) -> FamilyConfig:
        """The network, subnet length and allocation range of one IP version (4 or 6)."""
        if version == 4:
            return FamilyConfig(self.network, self.subnet_len, self.subnet_min, self.subnet_max)
        return FamilyConfig(
            self.ipv6_network, self.ipv6_subnet_len, self.ipv6_subnet_min, self.ipv6_subnet_max
        )


@dataclass(frozen=True)
class FamilyConfig:
    """One address family's share of the config: the cluster network and the subnet range."""

    network: IPNetwork | None
    subnet_len: int
    subnet_min: IPAddress | None
    subnet_max: IPAddress | None


# --- parsing -------------------------------------------------------------------------------------

T = TypeVar("T")


def _string(field_name: str, example: str) -> Callable[[Any], str]:
    def conv(value: Any) -> str:
        if not isinstance(value, str):
            raise ConfigError(field_name, f"must be a JSON string like {example!r}, got {value!r}")
        return value

    return conv


def _cidr(version: int, field_name: str, example: str) -> Callable[[Any], IPNetwork]:
    def conv(value: Any) -> IPNetwork:
        text = _string(field_name, example)(value)
        try:
            net = None if "%" in text else ipaddress.ip_network(text, strict=False)
        except ValueError:
            net = None
        if net is None or net.version != version or "/" not in text:
            raise ConfigError(
                field_name, f"{text!r} is not an IPv{version} CIDR; use a value like {example!r}"
            )
        return net

    return conv


def _address(version: int, field_name: str, example: str) -> Callable[[Any], IPAddress | None]:
    def conv(value: Any) -> IPAddress | None:
        text = _string(field_name, example)(value)
        try:
            addr = None if "%" in text else ipaddress.ip_address(text)
        except ValueError:
            addr = None
        if addr is None or addr.version != version:
            raise ConfigError(
                field_name, f"{text!r} is not an IPv{version} address; use a value like {example!r}"
            )
        return None if int(addr) == 0 else addr  # 0.0.0.0 / :: mean "not set"

    return conv


def _bool(field_name: str) -> Callable[[Any], bool]:
    def conv(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(field_name, f"must be JSON true or false, got {value!r}")
        return value

    return conv


def _uint(field_name: str, example: int) -> Callable[[Any], int]:
    def conv(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                field_name, f"must be a non-negative whole number like {example}, got {value!r}"
            )
        return value

    return conv


def _object(field_name: str) -> Callable[[Any], dict[str, Any]]:
    def conv(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(
                field_name, f'must be a JSON object like {{"Type": "vxlan"}}, got {value!r}'
            )
        return value

    return conv


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text} is out of range")
    return value


# One decoder for every call: `json.loads` with hooks builds a decoder and its C scanner per call,
# and that leaves a few hundred small blocks behind for good over the first thousand calls (CPython
# 3.11), scattered among whatever else is allocated then: at start-up, the 5,000 leases of a
# listing, whose freed heap pages they kept resident (about 4 MiB).
_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def strict_json_loads(text: str | bytes) -> Any:
    """`json.loads` as strict as Go's decoder: NaN/Infinity and out-of-range numbers rejected,
    any failure (also absurd nesting) raised as ValueError."""
    try:
        if isinstance(text, bytes):  # as json.loads takes bytes: UTF-8/16/32 by the BOM or zeros
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        elif text.startswith("\ufeff"):  # as json.loads refuses it in text
            raise ValueError("Unexpected UTF-8 BOM (decode using utf-8-sig)")
        return _STRICT_DECODER.decode(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(str(err) or type(err).__name__) from None


# JSON key (any case) -> (dataclass field, converter)
_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "network": ("network", _cidr(4, "Network", "10.244.0.0/16")),
    "ipv6network": ("ipv6_network", _cidr(6, "IPv6Network", "2001:db8:42::/56")),
    "enableipv4": ("enable_ipv4", _bool("EnableIPv4")),
    "enableipv6": ("enable_ipv6", _bool("EnableIPv6")),
    "enablenftables": ("enable_nftables", _bool("EnableNFTables")),
    "subnetlen": ("subnet_len", _uint("SubnetLen", 24)),
    "subnetmin": ("subnet_min", _address(4, "SubnetMin", "10.244.1.0")),
    "subnetmax": ("subnet_max", _address(4, "SubnetMax", "10.244.255.0")),
    "ipv6subnetlen": ("ipv6_subnet_len", _uint("IPv6SubnetLen", 64)),
    "ipv6subnetmin": ("ipv6_subnet_min", _address(6, "IPv6SubnetMin", "2001:db8:42:1::")),
    "ipv6subnetmax": ("ipv6_subnet_max", _address(6, "IPv6SubnetMax", "2001:db8:42:ff::")),
    "backend": ("backend", _object("Backend")),
}


def json_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """Fold a decoded JSON object's keys to lower case, the last spelling winning (Go's rule)."""
    return {key.lower(): value for key, value in obj.items()}


def parse_config(text: str | bytes) -> NetworkConfig:
    """Parse net-conf.json / the etcd `<prefix>/config` value, without validating ranges.

    Returns a `NetworkConfig`; raises `ConfigError` for invalid JSON or a field of the wrong type.
    Format: flannel `pkg/subnet/config.go` Config (Go JSON: case-insensitive keys, unknown ignored).
    """
    try:
        data = strict_json_loads(text)
    except ValueError as err:
        raise ConfigError(
            "(json)",
            f"not valid JSON ({err}); expected an object like "
            '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}',
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            "(json)", 'the config must be a JSON object, e.g. {"Network": "10.244.0.0/16"}'
        )
    values: dict[str, Any] = {}
    for key, raw in json_fields(data).items():
        spec = _FIELDS.get(key)
        if spec is None or raw is None:
            continue
        values[spec[0]] = spec[1](raw)
    backend: dict[str, Any] = values.get("backend", {})
    backend_type = DEFAULT_BACKEND
    if "backend" in values:
        raw_type = json_fields(backend).get("type", "")
        if not isinstance(raw_type, str):
            raise ConfigError("Backend.Type", f'must be a string like "vxlan", got {raw_type!r}')
        backend_type = raw_type
    return NetworkConfig(backend_type=backend_type, **values)


# --- validation and defaults (etcd mode) ---------------------------------------------------------


def _subnet_defaults(
    version: int, fam: FamilyConfig, names: tuple[str, str, str, str]
) -> tuple[int, IPAddress, IPAddress]:
    """Compute (subnet_len, subnet_min, subnet_max) for one family; names are the config keys."""
    net_name, len_name, min_name, max_name = names
    bits = 32 if version == 4 else 128
    net = fam.network
    example = "10.244.0.0/16" if version == 4 else "2001:db8:42::/56"
    if net is None or (int(net.network_address) == 0 and net.prefixlen == 0):
        raise ConfigError(
            net_name, f"is required; set it to the cluster's pod network, e.g. {example!r}"
        )
    max_len = bits - 2  # /30 or /126: the smallest subnet flannel hands out
    if fam.subnet_len > 0:
        if fam.subnet_len > max_len:
            raise ConfigError(
                len_name, f"{fam.subnet_len} is too long: it must be at most {max_len}"
            )
        if fam.subnet_len < net.prefixlen + 2:
            raise ConfigError(
                len_name,
                f"{fam.subnet_len} leaves {net} room for fewer than four subnets; "
                f"use at least {net.prefixlen + 2}",
            )
        sublen = fam.subnet_len
    else:
        usual_len, small = (24, 22) if version == 4 else (64, 62)
        if net.prefixlen > max_len - 2:
            raise ConfigError(
                net_name,
                f"{net} is too small: the network prefix must be at most /{max_len - 2}",
            )
        sublen = usual_len if net.prefixlen <= small else net.prefixlen + 2
    size = 1 << (bits - sublen)
    base = int(net.network_address)
    lo = fam.subnet_min if fam.subnet_min is not None else ipaddress.ip_address(base + size)
    hi = (
        fam.subnet_max
        if fam.subnet_max is not None
        else ipaddress.ip_address(base + net.num_addresses - size)
    )
    for name, addr in ((min_name, lo), (max_name, hi)):
        if addr not in net:
            raise ConfigError(name, f"{addr} is outside {net_name} {net}")
        if int(addr) % size:
            aligned = ipaddress.ip_address(int(addr) & ~(size - 1))
            raise ConfigError(
                name, f"{addr} is not on a /{sublen} boundary (SubnetLen); use e.g. {aligned}"
            )
    return sublen, lo, hi


def check_network_config(cfg: NetworkConfig) -> NetworkConfig:
    """Validate `cfg` and fill the computed defaults, as flanneld does in etcd mode.

    Returns a new `NetworkConfig` with subnet lengths, minima and maxima set for every enabled
    family. Raises `ConfigError` naming the field (flannel `pkg/subnet/config.go`
    CheckNetworkConfig).
    """
    if not cfg.families:
        raise ConfigError(
            "EnableIPv4", "EnableIPv4 and EnableIPv6 are both false; enable at least one"
        )
    updates: dict[str, Any] = {}
    if cfg.enable_ipv4:
        ln, lo, hi = _subnet_defaults(
            4, cfg.family(4), ("Network", "SubnetLen", "SubnetMin", "SubnetMax")
        )
        updates.update(subnet_len=ln, subnet_min=lo, subnet_max=hi)
    if cfg.enable_ipv6:
        ln, lo, hi = _subnet_defaults(
            6,
            cfg.family(6),
            ("IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax"),
        )
        updates.update(ipv6_subnet_len=ln, ipv6_subnet_min=lo, ipv6_subnet_max=hi)
    return dataclasses.replace(cfg, **updates)
