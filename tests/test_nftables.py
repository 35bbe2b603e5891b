"""flanneld's nftables mode (`EnableNFTables: true`): the transaction text, the tables as `nft`
lists them in a node's namespace, the repair of a changed table, the removal of the other mode's
rules both ways, masquerading seen from the "wan", and the daemon in nftables mode."""

from __future__ import annotations

import ipaddress

import pytest

from backend.nftables import (
    forward_chain,
    fully_random_test_script,
    masq_chain,
    table_script,
)
from backend.traffic import Family, TrafficRules
from tests.test_iptables import (
    FORWARD_S,
    MASQ6_S,
    MASQ_S,
    N6,
    P6,
    N,
    P,
    assert_masquerades_only_traffic_leaving,
    one_node,
    shown,
)
from tests.testbed import DEFAULT_NETWORK, Node, Testbed, inside, wait_for

NFT_NETWORK = '{"Network": "10.244.0.0/16", "EnableNFTables": true, "Backend": {"Type": "vxlan"}}'

# `nft list table ip flannel-ipv4` on a flanneld node with --ip-masq (the chains of flannel's
# e2e golden listings, `e2e/rules.go`, in the order flanneld creates them: masquerade first)
LIST_V4 = """\
table ip flannel-ipv4 {
	comment "rules for flannel-ipv4"
	chain postrtg {
		comment "chain to manage traffic masquerading by flannel"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x00004000 return
		ip saddr {P} ip daddr {N} return
		ip saddr {N} ip daddr {P} return
		ip saddr != {P} ip daddr {N} return
		ip saddr {N} ip daddr != 224.0.0.0/4 masquerade fully-random
		ip saddr != {N} ip daddr {N} masquerade fully-random
	}

	chain forward {
		comment "chain to accept flannel traffic"
		type filter hook forward priority filter; policy accept;
		ip saddr {N} accept
		ip daddr {N} accept
	}
}
"""
LIST_V6 = """\
table ip6 flannel-ipv6 {
	comment "rules for flannel-ipv6"
	chain postrtg {
		comment "chain to manage traffic masquerading by flannel"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark 0x00004000 return
		ip6 saddr {P} ip6 daddr {N} return
		ip6 saddr {N} ip6 daddr {P} return
		ip6 saddr != {P} ip6 daddr {N} return
		ip6 saddr {N} ip6 daddr != ff00::/8 masquerade fully-random
		ip6 saddr != {N} ip6 daddr {N} masquerade fully-random
	}

	chain forward {
		comment "chain to accept flannel traffic"
		type filter hook forward priority filter; policy accept;
		ip6 saddr {N} accept
		ip6 daddr {N} accept
	}
}
"""
EMPTY_V6 = 'table ip6 flannel-ipv6 {\n\tcomment "rules for flannel-ipv6"\n}\n'


def fill(listing: str, n: str, p: str) -> str:
    return listing.replace("{N}", n).replace("{P}", p)


def test_one_transaction_replaces_the_table_with_flanneld_s_chains() -> None:
    script = table_script(4, [masq_chain(N, P, True), forward_chain(N)])
    lines = script.splitlines()
    # works whether the table exists or not, and leaves nothing of the old one
    assert lines[:2] == ["add table ip flannel-ipv4", "delete table ip flannel-ipv4"]
    # the rest is the table as nft lists it (but the blank line nft puts between chains)
    listed = [x for x in fill(LIST_V4, N, P).splitlines() if x]
    assert [x.replace("0x4000", "0x00004000") for x in lines[2:]] == listed
    assert masq_chain(N, P, False).rules[-2:] == (
        f"ip saddr {N} ip daddr != 224.0.0.0/4 masquerade",
        f"ip saddr != {N} ip daddr {N} masquerade",
    )
    assert table_script(6, []).splitlines()[2:] == EMPTY_V6.splitlines()
    v6 = masq_chain(N6, P6, True).rules
    assert v6[3] == f"ip6 saddr != {P6} ip6 daddr {N6} return"
    assert v6[4] == f"ip6 saddr {N6} ip6 daddr != ff00::/8 masquerade fully-random"
    assert forward_chain(N6).rules == (f"ip6 saddr {N6} accept", f"ip6 daddr {N6} accept")
    assert "masqueradeTest" in fully_random_test_script()
    with pytest.raises(ValueError, match="is not of the family"):
        masq_chain(N6, P, True)


def nft_list(tb: Testbed, node: Node, family: str, table: str) -> str | None:
    res = tb.node_sh(node, "nft", "list", "table", family, table, check=False)
    return res.stdout if res.returncode == 0 else None


def nft_tables(tb: Testbed, node: Node) -> list[str]:
    return tb.node_sh(node, "nft", "list", "tables").stdout.splitlines()


def families(v6: bool = True) -> list[Family]:
    net = ipaddress.ip_network
    out = [Family(net(N), net(P))]
    return [*out, Family(net(N6), net(P6))] if v6 else out


@pytest.mark.kernel
def test_tables_are_flanneld_s_in_both_families_and_repaired() -> None:
    with one_node() as (tb, node), inside(node.netns):
        rules = TrafficRules(nftables=True, ip_masq=True, forward=True,
                             random_fully_disable=False, resync=1)  # fmt: skip
        rules.start(families())
        assert nft_list(tb, node, "ip", "flannel-ipv4") == fill(LIST_V4, N, P)
        assert nft_list(tb, node, "ip6", "flannel-ipv6") == fill(LIST_V6, N6, P6)
        rules.keeper.check()
        assert rules.keeper.repairs == 0  # as written: nothing to do

        # a rule deleted, a policy changed, a table deleted, a rule added: all put right
        handle = next(line.rsplit(" ", 1)[1] for line in tb.node_sh(
            node, "nft", "-a", "list", "chain", "ip", "flannel-ipv4", "postrtg").stdout.splitlines()
            if "meta mark" in line)  # fmt: skip
        tb.node_sh(node, "nft", "delete", "rule", "ip", "flannel-ipv4", "postrtg", "handle", handle)
        tb.node_sh(node, "nft", "add chain ip flannel-ipv4 forward { policy drop; }")
        tb.node_sh(node, "nft", "delete", "table", "ip6", "flannel-ipv6")
        assert "meta mark" not in (nft_list(tb, node, "ip", "flannel-ipv4") or "")
        rules.keeper.check()
        assert nft_list(tb, node, "ip", "flannel-ipv4") == fill(LIST_V4, N, P)
        assert nft_list(tb, node, "ip6", "flannel-ipv6") == fill(LIST_V6, N6, P6)
        tb.node_sh(node, "nft", "add", "rule", "ip", "flannel-ipv4", "forward", "accept")
        rules.keeper.check()
        assert nft_list(tb, node, "ip", "flannel-ipv4") == fill(LIST_V4, N, P)
        assert rules.keeper.repairs == 2


@pytest.mark.kernel
def test_each_mode_removes_the_other_mode_s_rules() -> None:
    """nftables mode removes FLANNEL-POSTRTG (nat) and FLANNEL-FWD (filter) with the rules
    jumping to them, in both iptables families, and leaves other rules alone; iptables mode
    deletes both nftables tables. Flags decide the chains: no `forward` without
    --iptables-forward-rules, no fully-random with --ip-masq-fully-random-disable."""
    with one_node() as (tb, node), inside(node.netns):
        TrafficRules(nftables=False, ip_masq=True, forward=True, random_fully_disable=False,
                     resync=1).start(families())  # fmt: skip
        assert len(shown(tb, node, "iptables", "nat")) == len(MASQ_S)
        assert len(shown(tb, node, "ip6tables", "nat")) == len(MASQ6_S)
        other = ["-A", "POSTROUTING", "-s", "10.9.0.0/16", "-j", "MASQUERADE"]
        tb.node_sh(node, "iptables", "-w", "-t", "nat", *other)

        rules = TrafficRules(nftables=True, ip_masq=True, forward=False,
                             random_fully_disable=True, resync=1)  # fmt: skip
        rules.start(families(v6=False))
        for binary in ("iptables", "ip6tables"):
            for table in ("nat", "filter"):
                assert shown(tb, node, binary, table) == [], (binary, table)
        nat = tb.node_sh(node, "iptables", "-w", "-t", "nat", "-S").stdout
        assert " ".join(other) in nat
        v4 = nft_list(tb, node, "ip", "flannel-ipv4") or ""
        assert "chain postrtg" in v4 and "chain forward" not in v4
        assert "fully-random" not in v4 and f"ip saddr != {N} ip daddr {N} masquerade\n" in v4
        assert nft_list(tb, node, "ip6", "flannel-ipv6") == EMPTY_V6  # created, as flanneld

        TrafficRules(nftables=False, ip_masq=False, forward=True, random_fully_disable=False,
                     resync=1).start(families(v6=False))  # fmt: skip
        assert [t for t in nft_tables(tb, node) if "flannel" in t] == []
        assert shown(tb, node, "iptables", "filter") == [x.format(N=N) for x in FORWARD_S]


@pytest.mark.kernel
@pytest.mark.etcd
def test_daemon_in_nftables_mode(testbed: Testbed) -> None:
    """A node that ran in iptables mode restarts with EnableNFTables: its iptables chains go,
    flanneld's tables come, a change by hand is repaired (--iptables-resync), nothing is removed
    on shutdown; back in iptables mode, the tables go and the iptables rules come back."""
    node = testbed.add_node()
    testbed.start_daemon(node, "--ip-masq", "--iptables-resync=1")
    testbed.wait_subnet(node)
    wait_for("the iptables rules", lambda: len(shown(testbed, node, "iptables", "nat")) == 8)
    assert testbed.stop_daemon(node) == 0

    testbed.put_config(NFT_NETWORK)
    testbed.start_daemon(node, "--ip-masq", "--iptables-resync=1")
    p = testbed.subnet_of(node)
    want = fill(LIST_V4, N, p)
    wait_for("the nftables table", lambda: nft_list(testbed, node, "ip", "flannel-ipv4") == want)
    assert nft_list(testbed, node, "ip6", "flannel-ipv6") == EMPTY_V6
    assert shown(testbed, node, "iptables", "nat") == shown(testbed, node, "iptables", "filter")
    assert shown(testbed, node, "iptables", "nat") == []
    testbed.node_sh(node, "nft", "flush", "chain", "ip", "flannel-ipv4", "postrtg")
    wait_for("the table repaired", lambda: nft_list(testbed, node, "ip", "flannel-ipv4") == want,
             timeout=15)  # fmt: skip
    assert "is not as written" in node.log()
    assert testbed.stop_daemon(node) == 0
    assert nft_list(testbed, node, "ip", "flannel-ipv4") == want

    testbed.put_config(DEFAULT_NETWORK)
    testbed.start_daemon(node, "--ip-masq", "--iptables-resync=1")
    wait_for("the iptables rules", lambda: len(shown(testbed, node, "iptables", "nat")) == 8)
    assert [t for t in nft_tables(testbed, node) if "flannel" in t] == []


@pytest.mark.kernel
@pytest.mark.etcd
def test_nftables_mode_masquerades_traffic_leaving_the_cluster_only(testbed: Testbed) -> None:
    testbed.put_config(NFT_NETWORK)
    nodes = [testbed.add_node() for _ in range(2)]
    for node in nodes:
        testbed.start_daemon(node, "--ip-masq")
    for node in nodes:
        testbed.wait_subnet(node)
    testbed.wait_converged()
    want = fill(LIST_V4, N, testbed.subnet_of(nodes[0]))
    wait_for("the nftables table",
             lambda: nft_list(testbed, nodes[0], "ip", "flannel-ipv4") == want)  # fmt: skip
    assert shown(testbed, nodes[0], "iptables", "nat") == []  # not iptables doing it
    assert_masquerades_only_traffic_leaving(testbed, nodes)
