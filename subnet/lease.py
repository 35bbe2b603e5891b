"""The lease model and its two wire formats: the etcd subnet key and the lease value JSON.

Both formats are shared with Go flanneld nodes in the same cluster, so they are byte-for-byte
flannel's: the key is flannel `pkg/subnet/subnet.go` MakeSubnetKey / ParseSubnetKey, the value is
the JSON encoding of flannel `pkg/lease` LeaseAttrs as Go's `encoding/json` writes it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from subnet.config import json_fields, strict_json_loads

IPv4Network = ipaddress.IPv4Network
IPv6Network = ipaddress.IPv6Network
UNSET_IPV4 = ipaddress.IPv4Address(0)  # what flannel publishes as PublicIP when there is none


class LeaseFormatError(ValueError):
    """A subnet key or lease value that is not in flannel's format."""


# --- subnet keys ---------------------------------------------------------------------------------

# Matched against the end of the whole etcd key only (flannel does not anchor the start); the IPv6
# part is lowercase hex, as Go writes it.
_KEY_RE = re.compile(r"([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)-([0-9]+)(?:&([a-f0-9:]+)-([0-9]+))?\Z")


def make_subnet_key(subnet: IPv4Network | None, ipv6_subnet: IPv6Network | None = None) -> str:
    """Format a lease's subnets as flannel's key name: `10.5.72.0-24` or `10.5.72.0-24&fd00::-64`.

    An IPv6-only lease has the empty IPv4 part `0.0.0.0-0`. IPv6 text is RFC 5952 (Go's canonical
    form). Raises ValueError when both subnets are None.
    """
    if subnet is None and ipv6_subnet is None:
        raise ValueError("a lease needs an IPv4 or an IPv6 subnet")
    v4 = f"{subnet.network_address}-{subnet.prefixlen}" if subnet is not None else "0.0.0.0-0"
    if ipv6_subnet is None:
        return v4
    return f"{v4}&{ipv6_subnet.network_address.compressed}-{ipv6_subnet.prefixlen}"


def parse_subnet_key(key: str) -> tuple[IPv4Network | None, IPv6Network | None]:
    """Parse a subnet key (or a whole etcd key ending in one) into (IPv4 subnet, IPv6 subnet).

    The empty IPv4 part `0.0.0.0-0` gives None. Raises `LeaseFormatError` for anything flannel
    rejects: prefixes of 32 (IPv4) or 128 (IPv6) and longer, invalid addresses, trailing text;
    and, unlike flannel, an address with host bits set (its key could not be written back).
    """
    m = _KEY_RE.search(key)
    if m is None:
        raise LeaseFormatError(f"{key!r} is not a subnet key like '10.5.72.0-24'")
    v4_text, v4_len, v6_text, v6_len = m.groups()
    try:
        if int(v4_len) > 31:  # flannel parses it as a 5-bit number
            raise ValueError("IPv4 prefix length above 31")
        v4 = ipaddress.IPv4Network(f"{v4_text}/{int(v4_len)}")  # host bits set: invalid
        v6 = None
        if v6_text is not None:
            if int(v6_len) > 127:  # a 7-bit number in flannel
                raise ValueError("IPv6 prefix length above 127")
            v6 = ipaddress.IPv6Network(f"{v6_text}/{int(v6_len)}")
    except ValueError as err:
        raise LeaseFormatError(f"{key!r} is not a valid subnet key: {err}") from None
    empty_v4 = int(v4.network_address) == 0 and v4.prefixlen == 0
    if empty_v4 and v6 is None:
        raise LeaseFormatError(f"{key!r} names no subnet")
    return (None if empty_v4 else v4), v6


# --- lease values --------------------------------------------------------------------------------


_SURROGATE = re.compile("[\ud800-\udfff]")


def go_json(value: Any) -> str:
    """Encode like Go's `json.Marshal`: compact, UTF-8, `<`, `>`, `&`, U+2028/9 escaped.

    Raises ValueError for NaN or infinite numbers (not JSON)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = _SURROGATE.sub("\ufffd", text)  # Go writes invalid UTF-16 as U+FFFD
    for char, escaped in (
        ("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
        ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),
    ):  # fmt: skip
        text = text.replace(char, escaped)
    return text


@dataclass(frozen=True)
class LeaseAttrs:
    """What a node publishes with its lease (flannel `pkg/lease` LeaseAttrs).

    `backend_data` / `backend_v6_data` are the decoded backend JSON (vxlan:
    `{"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}`), or None when absent.
    """

    public_ip: ipaddress.IPv4Address = UNSET_IPV4
    public_ipv6: ipaddress.IPv6Address | None = None
    backend_type: str = ""
    backend_data: Any = None
    backend_v6_data: Any = None

    def encode(self) -> bytes:
        """The etcd value, byte for byte as flanneld writes it.

        e.g. `{"PublicIP":"1.2.3.4","PublicIPv6":null}`; BackendType, BackendData and BackendV6Data
        are omitted when empty (Go `omitempty`).
        """
        fields: dict[str, Any] = {
            "PublicIP": str(self.public_ip),
            "PublicIPv6": None if self.public_ipv6 is None else self.public_ipv6.compressed,
        }
        if self.backend_type:
            fields["BackendType"] = self.backend_type
        if self.backend_data is not None:
            fields["BackendData"] = self.backend_data
        if self.backend_v6_data is not None:
            fields["BackendV6Data"] = self.backend_v6_data
        return go_json(fields).encode()

    @classmethod
    def decode(cls, value: bytes | str) -> LeaseAttrs:
        """Parse a lease value written by flanneld or flanneld-py (field names any case).

        Raises `LeaseFormatError` for invalid JSON or fields of the wrong type.
        """
        try:
            data = strict_json_loads(value)
        except ValueError as err:
            raise LeaseFormatError(f"lease value is not JSON: {err}") from None
        if not isinstance(data, dict):
            raise LeaseFormatError("lease value is not a JSON object")
        f = json_fields(data)
        try:
            public_ip = ipaddress.IPv4Address(_opt_str(f, "publicip") or "0.0.0.0")
            v6 = _opt_str(f, "publicipv6")
            if v6 and "%" in v6:
                raise ValueError(f"{v6!r} has a zone suffix")
            public_ipv6 = ipaddress.IPv6Address(v6) if v6 else None
        except ValueError as err:
            raise LeaseFormatError(f"lease value has a bad public IP: {err}") from None
        return cls(
            public_ip=public_ip,
            public_ipv6=public_ipv6,
            backend_type=_opt_str(f, "backendtype") or "",
            backend_data=f.get("backenddata"),
            backend_v6_data=f.get("backendv6data"),
        )


def _opt_str(fields: dict[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value is not None and not isinstance(value, str):
        raise LeaseFormatError(f"lease field {key} must be a string, got {value!r}")
    return value


@dataclass(frozen=True)
class Lease:
    """A node's lease: its subnets, what it published, and when etcd expires it.

    `expiration` is Unix time in seconds, None when unknown or never (a reservation: a key with no
    etcd lease, `lease_id` 0).
    """

    subnet: IPv4Network | None
    ipv6_subnet: IPv6Network | None
    attrs: LeaseAttrs
    expiration: float | None = None
    lease_id: int = 0

    @property
    def key(self) -> str:
        """The subnet key (`10.5.72.0-24`) this lease is stored under."""
        return make_subnet_key(self.subnet, self.ipv6_subnet)
