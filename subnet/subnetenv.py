"""subnet.env: the file through which flanneld hands the node's subnet to the CNI plugin.

Format (flannel `pkg/subnet/subnet.go` WriteSubnetFile): unquoted `KEY=value` lines in a fixed
order; FLANNEL_SUBNET is the first host address of the node's subnet (`10.244.1.1/24`). The file is
replaced atomically so a reader never sees it half written.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import tempfile
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SubnetEnv:
    """The values of subnet.env. A family is present when its network is set."""

    network: ipaddress.IPv4Network | None
    subnet: ipaddress.IPv4Network | None
    ipv6_network: ipaddress.IPv6Network | None
    ipv6_subnet: ipaddress.IPv6Network | None
    mtu: int
    ipmasq: bool

    def render(self) -> str:
        """The file's text, lines in flannel's order, each ending in a newline."""
        lines = []
        if self.network is not None and self.subnet is not None:
            lines.append(f"FLANNEL_NETWORK={self.network}")
            lines.append(f"FLANNEL_SUBNET={_first_host(self.subnet)}")
        if self.ipv6_network is not None and self.ipv6_subnet is not None:
            lines.append(f"FLANNEL_IPV6_NETWORK={self.ipv6_network}")
            lines.append(f"FLANNEL_IPV6_SUBNET={_first_host(self.ipv6_subnet)}")
        lines.append(f"FLANNEL_MTU={self.mtu}")
        lines.append(f"FLANNEL_IPMASQ={'true' if self.ipmasq else 'false'}")
        return "".join(line + "\n" for line in lines)


def _first_host(net: IPNetwork) -> str:
    return f"{net.network_address + 1}/{net.prefixlen}"


def write_subnet_env(path: str, env: SubnetEnv) -> None:
    """Atomically replace `path` with `env` (temp file in the same directory, fsync, rename).

    The parent directory is created with mode 0755; a new file gets mode 0644 whatever the umask,
    an existing file keeps its mode. Raises OSError when the directory cannot be written.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=".subnet.env.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(env.render())
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_env_file(path: str) -> dict[str, str]:
    """Read `KEY=value` lines (optional quotes removed); a missing file gives {}.

    Raises OSError for a file that exists but cannot be read.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def previous_cidr(values: dict[str, str], key: str, version: int) -> IPNetwork | None:
    """The single network named by `key` in a previous subnet.env, masked (`10.5.72.1/24` -> .0/24).

    The value may be a comma-separated list; unparsable entries are skipped; none or more than one
    valid entry gives None (flanneld's `main.go` ReadCIDRFromSubnetFile rules).
    """
    found: list[IPNetwork] = []
    for part in values.get(key, "").split(","):
        _, slash, plen = part.strip().partition("/")
        if not (slash and plen.isascii() and plen.isdigit()):
            continue  # Go's net.ParseCIDR needs "address/bits"
        try:
            net = ipaddress.ip_network(part.strip(), strict=False)
        except ValueError:
            continue
        if net.version == version:
            found.append(net)
    return found[0] if len(found) == 1 else None
