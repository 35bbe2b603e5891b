"""flanneld's masquerade and forward rules, nftables mode (`EnableNFTables: true`).

The tables, chains, comments and rules are flanneld's (flannel `pkg/trafficmngr/nftables`), so
that `nft list table ip flannel-ipv4` on a node shows what it shows under Go flanneld:

- table `flannel-ipv4` (family `ip`) and `flannel-ipv6` (family `ip6`), comment
  "rules for <table>", both created at every start even when a family has no rules;
- with `--ip-masq`, chain `postrtg` (type nat, hook postrouting, priority srcnat): return for
  kube-proxy's mark 0x4000, for pod traffic inside the cluster network, for cluster traffic into
  this node's pods and for other traffic into the cluster network (`ip saddr != P ip daddr N`,
  flanneld's own difference from its iptables rule), then masquerade cluster traffic leaving it
  (multicast excepted) and host traffic entering it, with `fully-random` unless
  `--ip-masq-fully-random-disable` or a `nft --check` of it fails;
- with `--iptables-forward-rules`, chain `forward` (type filter, hook forward, priority filter,
  policy accept): accept from and to the cluster network.

Everything is written with the `nft` command (Debian package `nftables`; Debian's
`python3-nftables` binds libnftables for Debian's own python3 only, not for a venv or the image's
Python, and is not on PyPI) as one `nft -f` transaction that replaces both tables whole (`add
table` + `delete table` + the new table), so the kernel goes from the old rules to the new ones at
once and nothing of an earlier start (an old subnet, a chain of a flag no longer given) stays.
Nothing is removed on shutdown.

Deliberately better than flanneld, which writes the tables once per start: `NftKeeper` lists the
tables every `--iptables-resync` seconds and writes them again when the listing differs from the
one read right after writing (a table, chain or rule deleted or changed by hand). In iptables
mode the two tables are deleted at start (`Nft.delete_tables`).
"""

from __future__ import annotations

import logging
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from backend.iptables import family_of

log = logging.getLogger(__name__)

# family -> (nft address family, table name, match keyword, multicast range)
FAMILIES = {
    4: ("ip", "flannel-ipv4", "ip", "224.0.0.0/4"),
    6: ("ip6", "flannel-ipv6", "ip6", "ff00::/8"),
}
FORWARD_CHAIN = "forward"
MASQ_CHAIN = "postrtg"
KUBE_PROXY_MARK = "0x4000"  # an exact match, as flanneld's (iptables matches it as a mask)
FULLY_RANDOM_TEST_CHAIN = "masqueradeTest"


class NftError(RuntimeError):
    """An `nft` command failed; the message has its output."""


@dataclass(frozen=True)
class Chain:
    """One base chain: its name, comment, `type ... hook ... priority ...; policy ...;`
    declaration and rules (nft syntax, in order)."""

    name: str
    comment: str
    declaration: str
    rules: tuple[str, ...]


def table_name(family: int) -> str:
    """`flannel-ipv4` or `flannel-ipv6`. Raises KeyError for another family."""
    return FAMILIES[family][1]


def masq_chain(network: str, subnet: str, fully_random: bool) -> Chain:
    """flanneld's `postrtg` chain for cluster `network` and this node's `subnet` (CIDR text of
    one family). Raises ValueError for a mixed or bad pair."""
    _, _, ip, multicast = FAMILIES[family_of(network, subnet)]
    masq = "masquerade fully-random" if fully_random else "masquerade"
    n, p = network, subnet
    return Chain(
        MASQ_CHAIN,
        "chain to manage traffic masquerading by flannel",
        "type nat hook postrouting priority srcnat; policy accept;",
        (
            f"meta mark {KUBE_PROXY_MARK} return",
            f"{ip} saddr {p} {ip} daddr {n} return",
            f"{ip} saddr {n} {ip} daddr {p} return",
            f"{ip} saddr != {p} {ip} daddr {n} return",
            f"{ip} saddr {n} {ip} daddr != {multicast} {masq}",
            f"{ip} saddr != {n} {ip} daddr {n} {masq}",
        ),
    )


def forward_chain(network: str) -> Chain:
    """flanneld's `forward` chain for cluster `network` (CIDR text, either family). Its policy
    stays accept: a drop policy there would cut the node off (flanneld's warning)."""
    ip = FAMILIES[family_of(network)][2]
    return Chain(
        FORWARD_CHAIN,
        "chain to accept flannel traffic",
        "type filter hook forward priority filter; policy accept;",
        (f"{ip} saddr {network} accept", f"{ip} daddr {network} accept"),
    )


def _quote(text: str) -> str:
    if '"' in text or "\n" in text:
        raise ValueError(f"nft comment {text!r} may not hold a quote or a newline")
    return f'"{text}"'


def table_script(family: int, chains: Sequence[Chain]) -> str:
    """The `nft -f` lines that replace table `flannel-ipv<family>` with one holding `chains`
    (in order): `add table`, `delete table` (so that it works whether the table exists or
    not), then the table with its comment and chains."""
    nft_family, name, _, _ = FAMILIES[family]
    out = [f"add table {nft_family} {name}", f"delete table {nft_family} {name}",
           f"table {nft_family} {name} {{", f"\tcomment {_quote('rules for ' + name)}"]  # fmt: skip
    for chain in chains:
        out += [f"\tchain {chain.name} {{", f"\t\tcomment {_quote(chain.comment)}",
                f"\t\t{chain.declaration}", *(f"\t\t{r}" for r in chain.rules), "\t}"]  # fmt: skip
    out.append("}")
    return "\n".join(out) + "\n"


def fully_random_test_script() -> str:
    """The transaction `nft --check` runs to learn whether `masquerade fully-random` is
    supported (flanneld's test chain `masqueradeTest` in `flannel-ipv4`; nothing is written)."""
    t = "ip " + table_name(4)
    return (
        f"add table {t}\n"
        f"add chain {t} {FULLY_RANDOM_TEST_CHAIN} "
        "{ type nat hook postrouting priority srcnat; }\n"
        f"add rule {t} {FULLY_RANDOM_TEST_CHAIN} ip saddr != 127.0.0.1 masquerade fully-random\n"
    )


class Nft:
    """Runs the `nft` command (`binary`). Writes are serialised."""

    def __init__(self, binary: str = "nft") -> None:
        self.binary = binary
        self._lock = threading.Lock()

    def _run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.binary, *args], input=stdin, capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    def apply(self, script: str) -> None:
        """Run `script` as one `nft -f` transaction. Raises NftError (nothing applied) or
        OSError (no `nft`)."""
        with self._lock:
            res = self._run("-f", "-", stdin=script)
        if res.returncode != 0:
            raise NftError(f"nft -f: {(res.stderr or res.stdout).strip()}")

    def check(self, script: str) -> bool:
        """Whether `nft --check -f` accepts `script` (nothing is applied). Raises OSError."""
        return self._run("--check", "-f", "-", stdin=script).returncode == 0

    def list_table(self, family: int) -> str | None:
        """`nft list table` of `flannel-ipv<family>`; None when the table does not exist.
        Raises NftError for another failure, OSError (no `nft`)."""
        nft_family, name, _, _ = FAMILIES[family]
        res = self._run("list", "table", nft_family, name)
        if res.returncode == 0:
            return res.stdout
        if "No such file or directory" in res.stderr:
            return None
        raise NftError(f"nft list table {nft_family} {name}: {res.stderr.strip()}")

    def delete_tables(self) -> list[str]:
        """Delete `flannel-ipv4` and `flannel-ipv6` where they exist, in one transaction
        (what iptables mode does at start). Returns the names deleted. Raises NftError or
        OSError (no `nft`)."""
        res = self._run("list", "tables")
        if res.returncode != 0:
            raise NftError(f"nft list tables: {res.stderr.strip()}")
        present = set(res.stdout.splitlines())
        found = [(f, n) for f, n, _, _ in FAMILIES.values() if f"table {f} {n}" in present]
        if found:
            self.apply("".join(f"delete table {f} {n}\n" for f, n in found))
        return [n for _, n in found]


class NftKeeper:
    """Writes flanneld's two tables at start and keeps them: at each `check` (every
    `--iptables-resync` seconds, `backend.traffic.TrafficRules.run`) each table that has chains
    is listed, and both are written again when a listing differs from the one read right after
    the last write (deliberately better than flanneld, which never looks)."""

    def __init__(self, nft: Nft) -> None:
        self.nft = nft
        self.chains: dict[int, list[Chain]] = {4: [], 6: []}
        self.written: dict[int, str | None] = {}  # family -> listing after the last write
        self.repairs = 0
        self._error = ""

    def script(self) -> str:
        """The one transaction that writes both tables as they should be."""
        return "".join(table_script(f, self.chains[f]) for f in sorted(self.chains))

    def write(self) -> None:
        """Write both tables and remember their listings. Raises NftError or OSError."""
        self.nft.apply(self.script())
        self.written = {f: self.nft.list_table(f) for f, chains in self.chains.items() if chains}
        held = [f"{table_name(f)}: {', '.join(c.name for c in chains)}"
                for f, chains in sorted(self.chains.items()) if chains]  # fmt: skip
        log.info("wrote the nftables tables %s (%s)",
                 ", ".join(table_name(f) for f in sorted(self.chains)),
                 "; ".join(held) or "no chains")  # fmt: skip

    def drifted(self) -> list[str]:
        """The tables whose listing is not the one written (or that were never written).
        Raises NftError or OSError."""
        out = []
        for family, chains in sorted(self.chains.items()):
            if family not in self.written and not chains:
                continue
            if family not in self.written or self.nft.list_table(family) != self.written[family]:
                out.append(table_name(family))
        return out

    def check(self) -> None:
        """Write the tables again when one of them drifted. Errors are logged (once while they
        repeat), not raised."""
        try:
            drifted = self.drifted()
            if drifted:
                repair = bool(self.written)  # else the first write failed: this is a retry
                if repair:
                    log.warning("the nftables table %s is not as written; writing the tables "
                                "again", ", ".join(drifted))  # fmt: skip
                self.write()
                self.repairs += repair
            self._error = ""
        except (NftError, OSError, subprocess.SubprocessError) as err:
            if str(err) != self._error:
                self._error = str(err)
                log.error("could not check or write the nftables tables: %s", err)
