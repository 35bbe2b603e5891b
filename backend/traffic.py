"""The traffic rules of one start, in the mode the network config chooses (flannel
`pkg/trafficmngr`): iptables (`backend.iptables`, the default) or nftables
(`EnableNFTables: true`, `backend.nftables`).

What the daemon does with it, in flanneld's order (flannel-behaviour.md §0 steps 10-12):
`TrafficRules(...)` with the flags, then `start([Family(...), ...])` with one `Family` per IP
family the node has (IPv4: `Network` and the lease's subnet; IPv6: `IPv6Network` and the lease's
IPv6 subnet), then `run(stop)` in a thread when `keeps_rules`. `start` first removes what the
other mode left (iptables mode: the nftables tables `flannel-ipv4`/`flannel-ipv6`; nftables mode:
the chains `FLANNEL-POSTRTG` and `FLANNEL-FWD` of both iptables families, with the rules jumping
to them), then writes the masquerade rules (`--ip-masq`) and the forward rules
(`--iptables-forward-rules`). `run` checks them every `--iptables-resync` seconds and writes what
went missing. Errors are logged, never raised: the overlay works without these rules (flanneld
exits instead), and the next check retries. Nothing is removed on shutdown.
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from backend.iptables import (
    Iptables,
    IptablesError,
    Rule,
    RuleKeeper,
    detect_variant,
    forward_rules,
    masq_rules,
)
from backend.nftables import Nft, NftError, NftKeeper, forward_chain, fully_random_test_script
from backend.nftables import masq_chain as nft_masq_chain

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Family:
    """The rule inputs of one IP family: the cluster network (`Network` or `IPv6Network`), this
    node's subnet of it, and those of the previous subnet.env (None when unknown; iptables
    mode removes the old masquerade rules when they differ). Raises ValueError when the subnet
    is not of the network's family."""

    network: IPNetwork
    subnet: IPNetwork
    previous_network: IPNetwork | None = None
    previous_subnet: IPNetwork | None = None

    def __post_init__(self) -> None:
        if self.subnet.version != self.network.version:
            raise ValueError(f"subnet {self.subnet} is not of the family of {self.network}")

    @property
    def version(self) -> int:
        """4 or 6."""
        return self.network.version


class TrafficRules:
    """flanneld's masquerade and forward rules in one mode; see the module docstring.

    `nftables`: the network config's `EnableNFTables`; `ip_masq`, `forward`,
    `random_fully_disable`: `--ip-masq`, `--iptables-forward-rules`,
    `--ip-masq-fully-random-disable`; `resync`: `--iptables-resync`, seconds between checks.
    """

    def __init__(self, *, nftables: bool, ip_masq: bool, forward: bool,
                 random_fully_disable: bool, resync: float) -> None:  # fmt: skip
        self.mode = "nftables" if nftables else "iptables"
        self.ip_masq = ip_masq
        self.forward = forward
        self.random_fully_disable = random_fully_disable
        self.resync = resync
        self.keeper: RuleKeeper | NftKeeper = self._new_keeper()
        self.variant = detect_variant()  # the iptables variant kubelet uses, "" if unknown
        if self.variant:
            log.info("kubelet's chains are in iptables-%s: using iptables-%s", self.variant,
                     self.variant)  # fmt: skip
        self._lock = threading.Lock()  # start/change (lease thread) vs checks (rules thread)

    def _new_keeper(self) -> RuleKeeper | NftKeeper:
        return NftKeeper(Nft()) if self.mode == "nftables" else RuleKeeper()

    @property
    def keeps_rules(self) -> bool:
        """Whether there are rules to check periodically (`run` is worth a thread)."""
        return self.ip_masq or self.forward

    def start(self, families: Sequence[Family]) -> None:
        """Remove the other mode's rules, then write this mode's for `families` (at most one
        per IP version, else ValueError). Errors of the commands are logged, not raised."""
        if len({f.version for f in families}) != len(families):
            raise ValueError("one Family per IP version")
        with self._lock:
            self._start(families)

    def change(self, families: Sequence[Family]) -> None:
        """The lease's subnet changed while running (own lease lost, its subnet taken): replace
        the rules of the old subnet by those of `families`, whose `previous_*` name the old
        network and subnet (iptables mode deletes the old masquerade rules; nftables mode
        rewrites its tables whole). Errors are logged, not raised."""
        with self._lock:
            self.keeper = self._new_keeper()
            self._start(families)

    def _start(self, families: Sequence[Family]) -> None:
        if isinstance(self.keeper, NftKeeper):
            self._clean_up_iptables((4, 6))
            self._start_nftables(self.keeper, families)
        else:
            self._clean_up_nftables()
            for family in families:
                self._start_iptables(self.keeper, family)

    def run(self, stop: threading.Event) -> None:
        """Check (and repair) the rules every `resync` seconds until `stop` is set."""
        while not stop.wait(self.resync):
            with self._lock:
                self.keeper.check()

    # --- nftables mode --------------------------------------------------------------------------

    def _clean_up_iptables(self, versions: Sequence[int]) -> None:
        for version in versions:
            ipt = Iptables(version, self.variant)
            try:
                removed = ipt.remove_flannel_chains()
            except FileNotFoundError:
                log.debug("no %s: no iptables rules to remove", ipt.binary)
                continue
            except (IptablesError, OSError, subprocess.SubprocessError) as err:
                log.warning("could not remove the %s chains of iptables mode: %s", ipt.binary, err)
                continue
            if removed:
                log.info("removed the %s chains %s of iptables mode", ipt.binary,
                         ", ".join(removed))  # fmt: skip

    def _start_nftables(self, keeper: NftKeeper, families: Sequence[Family]) -> None:
        fully_random = False
        if self.ip_masq and not self.random_fully_disable:
            try:
                fully_random = keeper.nft.check(fully_random_test_script())
            except (OSError, subprocess.SubprocessError) as err:
                log.error("could not run nft: %s", err)
            if not fully_random:
                log.warning("nftables: masquerade fully-random is not supported; masquerading "
                            "without it")  # fmt: skip
        for family in families:
            chains = keeper.chains[family.version]
            if self.ip_masq:
                chains.append(nft_masq_chain(str(family.network), str(family.subnet),
                                             fully_random))  # fmt: skip
            if self.forward:
                chains.append(forward_chain(str(family.network)))
        try:
            keeper.write()
        except (NftError, OSError, subprocess.SubprocessError) as err:
            log.error("could not write the nftables rules: %s; retrying every %g s", err,
                      self.resync)  # fmt: skip

    # --- iptables mode --------------------------------------------------------------------------

    def _clean_up_nftables(self) -> None:
        try:
            removed = Nft().delete_tables()
        except FileNotFoundError:
            log.debug("no nft: no nftables tables to remove")
            return
        except (NftError, OSError, subprocess.SubprocessError) as err:
            log.warning("could not remove the nftables tables of nftables mode: %s", err)
            return
        if removed:
            log.info("removed the nftables tables %s of nftables mode", ", ".join(removed))

    def _start_iptables(self, keeper: RuleKeeper, family: Family) -> None:
        ipt = Iptables(family.version, self.variant)
        suffix = "" if family.version == 4 else " (IPv6)"
        network, subnet = str(family.network), str(family.subnet)
        sets: list[tuple[str, list[Rule]]] = []
        try:
            random_fully = not self.random_fully_disable and ipt.supports_random_fully()
        except OSError as err:
            log.error("could not run %s: %s", ipt.binary, err)
            random_fully = False
        if self.ip_masq:
            old_net, old_sub = family.previous_network, family.previous_subnet
            changed = (old_net, old_sub) != (family.network, family.subnet)
            if old_net is not None and old_sub is not None and changed:
                log.info("removing the masquerade rules%s of the previous network %s, subnet %s",
                         suffix, old_net, old_sub)  # fmt: skip
                try:
                    ipt.delete(masq_rules(str(old_net), str(old_sub), random_fully))
                except (IptablesError, OSError, subprocess.SubprocessError) as err:
                    log.error("could not remove the previous masquerade rules%s: %s", suffix, err)
            sets.append(("masquerade" + suffix, masq_rules(network, subnet, random_fully)))
        if self.forward:
            sets.append(("forward" + suffix, forward_rules(network)))
        for name, rules in sets:
            try:
                keeper.add(name, ipt, rules)
            except (IptablesError, OSError, subprocess.SubprocessError) as err:
                log.error("could not write the %s rules: %s; retrying every %g s", name, err,
                          self.resync)  # fmt: skip
