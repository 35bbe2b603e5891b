"""flanneld's masquerade and forward rules, iptables mode (IPv4 with `iptables`, IPv6 with
`ip6tables`).

The rule sets and their order are flanneld's (flannel `pkg/trafficmngr/iptables`), so that a
node switched from Go flanneld to flanneld-py keeps exactly the same rules, in both families
(IPv6: the same rules with the IPv6 network and subnet, multicast `ff00::/8`):

- masquerade (`--ip-masq`), table `nat`: a jump from POSTROUTING to chain `FLANNEL-POSTRTG`, which
  returns for kube-proxy's masquerade mark, for pod traffic inside the cluster network and for
  traffic into this node's pods, and masquerades the cluster's traffic leaving it (multicast
  excepted) and host traffic entering it;
- forward (`--iptables-forward-rules`, on by default), table `filter`: a jump from FORWARD to
  `FLANNEL-FWD`, which accepts traffic from and to the cluster network.

Every rule carries the comment "flanneld masq" or "flanneld forward". The jumps are appended to
the built-in chains. A rule set is written with one `iptables-restore --noflush` per table: an
existing rule is deleted and appended again, so the whole set ends up in order. A periodic check
(one `iptables -S` per table) rewrites the whole set when any rule is missing. Nothing is removed
on shutdown; a node whose network or subnet changed removes the rules of the old ones at start.
In nftables mode the two chains and the rules jumping to them are removed at start
(`Iptables.remove_flannel_chains`).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

MASQ_COMMENT = "flanneld masq"
FORWARD_COMMENT = "flanneld forward"
MULTICAST_V4 = "224.0.0.0/4"
MULTICAST_V6 = "ff00::/8"
MASQ_CHAIN = "FLANNEL-POSTRTG"
FORWARD_CHAIN = "FLANNEL-FWD"
# (table, chain) of flanneld's own chains, the same in both families
FLANNEL_CHAINS = (("nat", MASQ_CHAIN), ("filter", FORWARD_CHAIN))
KUBE_PROXY_MARK = "0x4000/0x4000"


@dataclass(frozen=True)
class Rule:
    """One rule: its table, chain and match/target arguments (as `iptables -A CHAIN` takes them)."""

    table: str
    chain: str
    spec: tuple[str, ...]


def family_of(network: str, subnet: str | None = None) -> int:
    """4 or 6: the IP version of `network` (CIDR text), which `subnet` must share. Raises
    ValueError naming the value that is not a CIDR or is of the other family."""
    try:
        version = ipaddress.ip_network(network, strict=False).version
    except ValueError as err:
        raise ValueError(f"network {network!r} is not a CIDR: {err}") from None
    if subnet is not None:
        try:
            sub_version = ipaddress.ip_network(subnet, strict=False).version
        except ValueError as err:
            raise ValueError(f"subnet {subnet!r} is not a CIDR: {err}") from None
        if sub_version != version:
            raise ValueError(f"subnet {subnet} is not of the family of network {network}")
    return version


def masq_rules(network: str, subnet: str, random_fully: bool) -> list[Rule]:
    """flanneld's masquerade rules for cluster `network` and this node's `subnet` (CIDR text of
    one family: IPv4 for `iptables`, IPv6 for `ip6tables`), in order. `random_fully` adds
    `--random-fully` to the MASQUERADE targets. Raises ValueError for a mixed or bad pair."""
    multicast = MULTICAST_V4 if family_of(network, subnet) == 4 else MULTICAST_V6
    c = ("-m", "comment", "--comment", MASQ_COMMENT)
    masq = ("-j", "MASQUERADE", *(("--random-fully",) if random_fully else ()))
    chain = MASQ_CHAIN
    return [
        Rule("nat", "POSTROUTING", (*c, "-j", chain)),
        Rule("nat", chain, ("-m", "mark", "--mark", KUBE_PROXY_MARK, *c, "-j", "RETURN")),
        Rule("nat", chain, ("-s", subnet, "-d", network, *c, "-j", "RETURN")),
        Rule("nat", chain, ("-s", network, "-d", subnet, *c, "-j", "RETURN")),
        Rule("nat", chain, ("!", "-s", network, "-d", subnet, *c, "-j", "RETURN")),
        Rule("nat", chain, ("-s", network, "!", "-d", multicast, *c, *masq)),
        Rule("nat", chain, ("!", "-s", network, "-d", network, *c, *masq)),
    ]


def forward_rules(network: str) -> list[Rule]:
    """flanneld's forward rules for cluster `network` (CIDR text, either family), in order.
    Raises ValueError when `network` is not a CIDR."""
    family_of(network)
    c = ("-m", "comment", "--comment", FORWARD_COMMENT)
    chain = FORWARD_CHAIN
    return [
        Rule("filter", "FORWARD", (*c, "-j", chain)),
        Rule("filter", chain, ("-s", network, *c, "-j", "ACCEPT")),
        Rule("filter", chain, ("-d", network, *c, "-j", "ACCEPT")),
    ]


def _quote(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg


def restore_payload(
    table: str, lines: Sequence[tuple[str, Rule]], chains: Sequence[str] = ()
) -> str:
    """The `iptables-restore --noflush` input for one table: `*table`, a `:CHAIN - [0:0]` line
    per chain of `chains` (which creates the chain, or flushes it, in the same commit), one
    `-A`/`-D` line per (action, rule), `COMMIT`. Arguments with spaces (the comments) are
    double-quoted."""
    out = [f"*{table}", *(f":{chain} - [0:0]" for chain in chains)]
    for action, rule in lines:
        out.append(action + rule_line(rule)[2:])
    out.append("COMMIT")
    return "\n".join(out) + "\n"


class IptablesError(RuntimeError):
    """An iptables command failed; the message has its output."""


KUBELET_CHAINS = re.compile(r"^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY) ", re.MULTILINE)
"""The chains kubelet (Kubernetes 1.17 and later) creates in table `mangle` of the iptables
variant the node uses, as `iptables-save` lists them."""


def _save(*args: str) -> str:
    try:
        res = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return res.stdout


def detect_variant() -> str:
    """The iptables variant kubelet uses on this node: "nft" or "legacy" when kubelet's chains
    (`KUBELET_CHAINS`) are in that variant's tables, else "" (the system's `iptables`).

    iptables 1.8 has two variants writing to different kernel tables; rules written to the
    other variant than kube-proxy's still apply, but a FORWARD policy of DROP set in one is
    not overridden by an ACCEPT in the other. flannel's image picks the variant at start with
    the same test (the `iptables-wrapper` of kubernetes-sigs/iptables-wrappers: nft's `mangle`
    table first, then the whole legacy listing, which does not create tables that are not
    there). Commands that are missing or fail count as "no chains".
    """
    for family in ("iptables", "ip6tables"):
        if KUBELET_CHAINS.search(_save(f"{family}-nft-save", "-t", "mangle")):
            return "nft"
    for family in ("iptables", "ip6tables"):
        if KUBELET_CHAINS.search(_save(f"{family}-legacy-save")):
            return "legacy"
    return ""


class Iptables:
    """Runs `iptables` and `iptables-restore` (`family` 4) or `ip6tables` and
    `ip6tables-restore` (`family` 6); with `variant` "nft" or "legacy", that variant's commands
    (`iptables-nft`, `iptables-nft-restore`, ...). Restores are serialised. Raises ValueError
    for another family or variant."""

    def __init__(self, family: int = 4, variant: str = "") -> None:
        if family not in (4, 6):
            raise ValueError(f"IP family must be 4 or 6, not {family!r}")
        if variant not in ("", "nft", "legacy"):
            raise ValueError(f"iptables variant must be nft or legacy, not {variant!r}")
        self.family = family
        base = "iptables" if family == 4 else "ip6tables"
        self.binary = f"{base}-{variant}" if variant else base
        self.restore = f"{self.binary}-restore"
        self._lock = threading.Lock()
        self._random_fully: bool | None = None
        self._listing_differs: set[str] = set()  # tables whose -S output we cannot compare with

    def _run(self, *args: str, stdin: str | None = None, check: bool = True) -> int:
        res = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)
        if check and res.returncode != 0:
            raise IptablesError(f"{' '.join(args)}: {(res.stderr or res.stdout).strip()}")
        return res.returncode

    def supports_random_fully(self) -> bool:
        """Whether MASQUERADE takes --random-fully (iptables 1.6.2 and later)."""
        if self._random_fully is None:
            res = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                                 timeout=30)  # fmt: skip
            found = re.search(r"v(\d+)\.(\d+)\.(\d+)", res.stdout)
            version = tuple(int(x) for x in found.groups()) if found else (0, 0, 0)
            self._random_fully = version >= (1, 6, 2)
        return self._random_fully

    def exists(self, rule: Rule) -> bool:
        """Whether `rule` is in its chain (`iptables -C`); False also when the chain is gone."""
        return self._run(self.binary, "-w", "-t", rule.table, "-C", rule.chain, *rule.spec,
                         check=False) == 0  # fmt: skip

    def chain_exists(self, table: str, chain: str) -> bool:
        """Whether `chain` exists in `table`."""
        return self._run(self.binary, "-w", "-t", table, "-S", chain, check=False) == 0

    def clear_chain(self, table: str, chain: str) -> None:
        """Create `chain`, or flush it when it exists."""
        if self.chain_exists(table, chain):
            self._run(self.binary, "-w", "-t", table, "-F", chain)
        else:
            self._run(self.binary, "-w", "-t", table, "-N", chain)

    def write(self, rules: Sequence[Rule]) -> None:
        """Write `rules` in order, one `iptables-restore` per table, so that the table goes
        from the old rules to the new ones at once: own chains created or flushed (flanneld
        flushes them first, leaving a moment without rules), every existing rule of a built-in
        chain deleted and appended again. Raises IptablesError."""
        with self._lock:
            for table in dict.fromkeys(r.table for r in rules):
                mine = [r for r in rules if r.table == table]
                chains = [c for c in dict.fromkeys(r.chain for r in mine)
                          if c.startswith("FLANNEL-")]  # fmt: skip
                lines: list[tuple[str, Rule]] = []
                for rule in mine:
                    if not rule.chain.startswith("FLANNEL-") and self.exists(rule):
                        lines.append(("-D", rule))
                    lines.append(("-A", rule))
                self._run(self.restore, "--noflush", "--wait",
                          stdin=restore_payload(table, lines, chains))  # fmt: skip

    def delete(self, rules: Sequence[Rule]) -> None:
        """Delete those of `rules` that exist. Raises IptablesError."""
        with self._lock:
            for table in dict.fromkeys(r.table for r in rules):
                lines = [("-D", r) for r in rules if r.table == table and self.exists(r)]
                if lines:
                    self._run(self.restore, "--noflush", "--wait",
                              stdin=restore_payload(table, lines))  # fmt: skip

    def listing(self, table: str) -> list[str]:
        """The lines of `iptables -t TABLE -S`, in order. Raises IptablesError."""
        res = subprocess.run([self.binary, "-w", "-t", table, "-S"], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        if res.returncode != 0:
            raise IptablesError(f"{self.binary} -t {table} -S: {res.stderr.strip()}")
        return res.stdout.splitlines()

    def listed(self, table: str) -> set[str]:
        """The lines of `iptables -t TABLE -S`. Raises IptablesError."""
        return set(self.listing(table))

    def remove_flannel_chains(self) -> list[str]:
        """Remove flanneld's chains (`FLANNEL-POSTRTG` in `nat`, `FLANNEL-FWD` in `filter`)
        with every rule that jumps to them, one restore per table that has one (what nftables
        mode does at start; flannel flushes and deletes both chains in `nat` and leaves the
        jumps, so its chains stay). Returns the `table/chain` names removed. Raises
        IptablesError or OSError (no such binary)."""
        removed: list[str] = []
        with self._lock:
            for table, chain in FLANNEL_CHAINS:
                listing = self.listing(table)
                if f"-N {chain}" not in listing:
                    continue
                targets = (f" -j {chain}", f" -g {chain}")
                jumps = [
                    line
                    for line in listing
                    if line.startswith("-A ")
                    and line.endswith(targets)
                    and not line.startswith(f"-A {chain} ")
                ]
                lines = [f"*{table}", *("-D" + j[2:] for j in jumps), f"-F {chain}", f"-X {chain}"]
                self._run(self.restore, "--noflush", "--wait",
                          stdin="\n".join([*lines, "COMMIT"]) + "\n")  # fmt: skip
                removed.append(f"{table}/{chain}")
        return removed

    def missing(self, rules: Sequence[Rule]) -> list[Rule]:
        """The rules of `rules` that are not there, from one `iptables -S` per table: a rule is
        there when its `-A` line is listed as we render it. Where the listing renders a rule
        differently (another iptables version), each rule is checked with `iptables -C`.
        Raises IptablesError."""
        out: list[Rule] = []
        for table in dict.fromkeys(r.table for r in rules):
            listed = self.listed(table)
            absent = [r for r in rules if r.table == table and rule_line(r) not in listed]
            if absent and table in self._listing_differs:
                absent = [r for r in absent if not self.exists(r)]
            out += absent
        return out

    def listing_matches(self, rules: Sequence[Rule]) -> None:
        """After writing `rules`: if `iptables -S` does not show them as rendered, remember to
        check that table's rules one by one from now on. Raises IptablesError."""
        for table in dict.fromkeys(r.table for r in rules):
            listed = self.listed(table)
            if any(rule_line(r) not in listed for r in rules if r.table == table):
                log.info("iptables lists the %s rules differently from flanneld-py; checking "
                         "them one by one", table)  # fmt: skip
                self._listing_differs.add(table)


def rule_line(rule: Rule) -> str:
    """The rule as `iptables -S` lists it: `-A CHAIN args`, arguments with spaces quoted."""
    return " ".join(["-A", rule.chain, *(_quote(a) for a in rule.spec)])


class RuleKeeper:
    """Keeps rule sets in place: writes them at start and, at each `check` (every
    `--iptables-resync` seconds, `backend.traffic.TrafficRules.run`), rewrites a whole set when
    any rule of it is missing (flanneld's resync). Each set has its own `Iptables` (so one keeper
    holds IPv4 and IPv6 sets)."""

    def __init__(self) -> None:
        self.sets: list[tuple[str, Iptables, list[Rule]]] = []  # (name, runner, rules)
        self.repairs = 0
        self._errors: dict[str, str] = {}  # set name -> error last logged

    def add(self, name: str, iptables: Iptables, rules: list[Rule]) -> None:
        """Keep a rule set and write it now with `iptables`. Raises IptablesError or OSError
        (the set is kept: the next check writes it again)."""
        self.sets.append((name, iptables, rules))
        iptables.write(rules)
        iptables.listing_matches(rules)
        log.info("wrote the %s rules (%d rules)", name, len(rules))

    def check(self) -> None:
        """Rewrite every set with a missing rule. Errors are logged (once while they repeat),
        not raised."""
        for name, iptables, rules in self.sets:
            try:
                missing = iptables.missing(rules)
                if missing:
                    log.warning("%d of the %s rules are missing; writing the set again",
                                len(missing), name)  # fmt: skip
                    iptables.write(rules)
                    self.repairs += 1
                self._errors.pop(name, None)
            except (IptablesError, OSError, subprocess.SubprocessError) as err:
                if self._errors.get(name) != str(err):
                    self._errors[name] = str(err)
                    log.error("could not check or repair the %s rules: %s", name, err)
