"""flanneld's masquerade and forward rules: the rule text, and the rules in a node's namespace."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator

import pytest

from backend.iptables import Rule, forward_rules, masq_rules, restore_payload
from backend.traffic import Family, TrafficRules
from tests.testbed import Node, Testbed, end_process, inside, wait_for

N, P = "10.244.0.0/16", "10.244.3.0/24"
N6, P6 = "2001:db8:42::/56", "2001:db8:42:3::/64"

# what `iptables -t nat -S` shows on a flanneld node (flannel's e2e golden rules; `-S` lists
# the chains first)
MASQ_S = [
    "-N FLANNEL-POSTRTG",
    '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
    "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 "
    '-m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG -s {P} -d {N} -m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG -s {N} -d {P} -m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG ! -s {N} -d {P} -m comment --comment "flanneld masq" -j RETURN',
    '-A FLANNEL-POSTRTG -s {N} ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" '
    "-j MASQUERADE --random-fully",
    '-A FLANNEL-POSTRTG ! -s {N} -d {N} -m comment --comment "flanneld masq" '
    "-j MASQUERADE --random-fully",
]
FORWARD_S = [
    "-N FLANNEL-FWD",
    '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
    '-A FLANNEL-FWD -s {N} -m comment --comment "flanneld forward" -j ACCEPT',
    '-A FLANNEL-FWD -d {N} -m comment --comment "flanneld forward" -j ACCEPT',
]


def test_restore_payload_quotes_comments_and_keeps_order() -> None:
    rules = masq_rules(N, P, random_fully=False)
    payload = restore_payload("nat", [("-D", rules[0]), ("-A", rules[0]), ("-A", rules[6])])
    assert payload.splitlines() == [
        "*nat",
        '-D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
        '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
        f'-A FLANNEL-POSTRTG ! -s {N} -d {N} -m comment --comment "flanneld masq" -j MASQUERADE',
        "COMMIT",
    ]
    assert forward_rules(N)[1] == Rule(
        "filter", "FLANNEL-FWD", ("-s", N, "-m", "comment", "--comment", "flanneld forward", "-j",
                                  "ACCEPT"))  # fmt: skip


def test_a_rule_set_is_replaced_in_one_restore_per_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """flanneld flushes its chain (`iptables -F`) and then restores the rules: a connection
    starting in between is not masqueraded. Here the chain is declared in the restore itself
    (`:FLANNEL-POSTRTG - [0:0]` creates or flushes it), so the kernel goes from the old rules
    to the new ones at once."""
    from backend.iptables import Iptables

    ipt = Iptables(4)
    calls: list[tuple[tuple[str, ...], str | None]] = []

    def run(*args: str, stdin: str | None = None, check: bool = True) -> int:
        calls.append((args, stdin))
        return 1  # `-C`: no rule there yet

    monkeypatch.setattr(ipt, "_run", run)
    ipt.write(masq_rules(N, P, random_fully=False) + forward_rules(N))
    assert not [args for args, _ in calls if {"-F", "-N", "-X"} & set(args)]
    payloads = [stdin for args, stdin in calls if args[0] == "iptables-restore"]
    assert [p.splitlines()[:2] for p in payloads if p] == [
        ["*nat", ":FLANNEL-POSTRTG - [0:0]"],
        ["*filter", ":FLANNEL-FWD - [0:0]"],
    ]


def rules_shown(tb: Testbed, node: Node, table: str, binary: str = "iptables") -> list[str]:
    res = tb.node_sh(node, binary, "-w", "-t", table, "-S")
    return [line for line in res.stdout.splitlines() if "FLANNEL" in line]


@pytest.mark.kernel
@pytest.mark.etcd
def test_rules_are_flanneld_s_and_come_back_when_deleted(testbed: Testbed) -> None:
    node = testbed.add_node()
    testbed.start_daemon(node, "--ip-masq", "--iptables-resync=1")
    subnet = testbed.wait_subnet(node)
    p = testbed.subnet_of(node)
    want_nat = [line.format(N=N, P=p) for line in MASQ_S]
    want_filter = [line.format(N=N) for line in FORWARD_S]
    wait_for("the rules", lambda: rules_shown(testbed, node, "nat") == want_nat)
    wait_for("the forward rules", lambda: rules_shown(testbed, node, "filter") == want_filter)
    assert node.subnet_env()["FLANNEL_IPMASQ"] == "true" and subnet
    # a rule deleted by hand, and a whole chain flushed, come back in order
    testbed.node_sh(node, "iptables", "-w", "-t", "nat", "-D", "FLANNEL-POSTRTG", "-m", "mark",
                    "--mark", "0x4000/0x4000", "-m", "comment", "--comment", "flanneld masq",
                    "-j", "RETURN")  # fmt: skip
    testbed.node_sh(node, "iptables", "-w", "-t", "filter", "-F", "FLANNEL-FWD")
    wait_for("the rules repaired", lambda: rules_shown(testbed, node, "nat") == want_nat,
             timeout=15)  # fmt: skip
    wait_for("the forward rules repaired",
             lambda: rules_shown(testbed, node, "filter") == want_filter, timeout=15)  # fmt: skip
    # nothing is removed on shutdown
    assert testbed.stop_daemon(node) == 0
    assert rules_shown(testbed, node, "nat") == want_nat


@pytest.mark.kernel
@pytest.mark.etcd
def test_rules_go_to_the_iptables_variant_kubelet_uses(testbed: Testbed) -> None:
    """kubelet's canary chain in iptables-legacy: the rules are written, and repaired, with
    iptables-legacy, where a FORWARD policy set by the node's other software lives too."""
    node = testbed.add_node()
    testbed.node_sh(node, "iptables-legacy", "-w", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY")
    testbed.start_daemon(node, "--ip-masq", "--iptables-resync=1")
    testbed.wait_subnet(node)
    want_nat = [line.format(N=N, P=testbed.subnet_of(node)) for line in MASQ_S]
    legacy = "iptables-legacy"
    wait_for("the legacy rules", lambda: rules_shown(testbed, node, "nat", legacy) == want_nat)
    assert rules_shown(testbed, node, "filter", legacy) == [line.format(N=N) for line in FORWARD_S]
    assert rules_shown(testbed, node, "nat", "iptables-nft") == []
    assert rules_shown(testbed, node, "filter", "iptables-nft") == []
    testbed.node_sh(node, legacy, "-w", "-t", "nat", "-F", "FLANNEL-POSTRTG")
    wait_for("the legacy rules repaired",
             lambda: rules_shown(testbed, node, "nat", legacy) == want_nat, timeout=15)  # fmt: skip


@pytest.mark.kernel
@pytest.mark.etcd
def test_rules_follow_a_subnet_change_while_running(testbed: Testbed) -> None:
    """The node's lease is lost and its subnet taken by another node while the daemon runs:
    the daemon leases another subnet, and the masquerade rules of the old one make way for the
    new one's (else traffic from the cluster to the node's new pods would be masqueraded)."""
    node = testbed.add_node()
    testbed.start_daemon(node, "--ip-masq", "--iptables-resync=1")
    testbed.wait_subnet(node)
    old = testbed.subnet_of(node)
    path = f"{testbed.etcd_prefix}/subnets/{old.replace('/', '-')}"
    value = (
        b'{"PublicIP":"198.18.0.99","PublicIPv6":null,"BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:99"}}'
    )
    # delete the lease and take its subnet before the daemon takes it back (create-if-absent,
    # repeated while the daemon wins the race)
    for _ in range(20):
        testbed.client.delete(path)
        if testbed.client.put_if_not_exists(path, value):
            break
    else:
        pytest.fail(f"the daemon took {old} back 20 times in a row")
    new = wait_for(
        "a new subnet",
        lambda: {testbed.subnet_of(node)} - {old} and testbed.subnet_of(node),
        timeout=30,
    )
    want = [line.format(N=N, P=new) for line in MASQ_S]
    wait_for("the rules of the new subnet", lambda: rules_shown(testbed, node, "nat") == want)


@pytest.mark.kernel
@pytest.mark.etcd
def test_without_ip_masq_only_the_forward_rules_are_written(testbed: Testbed) -> None:
    node = testbed.add_node()
    testbed.start_daemon(node, "--iptables-forward-rules=true")
    testbed.wait_subnet(node)
    want = [line.format(N=N) for line in FORWARD_S]
    wait_for("the forward rules", lambda: rules_shown(testbed, node, "filter") == want)
    assert rules_shown(testbed, node, "nat") == []


SEND = "import socket, sys; socket.socket(2, 2).sendto(b'x', (sys.argv[1], int(sys.argv[2])))"
RECEIVE = (
    "import socket, sys; s = socket.socket(2, 2); s.bind((sys.argv[1], int(sys.argv[2]))); "
    "s.settimeout(20); print(s.recvfrom(16)[1][0], flush=True)"
)


def assert_masquerades_only_traffic_leaving(testbed: Testbed, nodes: list[Node]) -> None:
    """With the masquerade rules on `nodes[0]`: the "wan", the testbed's underlay router
    (198.18.0.254, this test's own namespace), must see the node's address for a pod's packet;
    a pod on `nodes[1]`, the pod's own address."""
    import socket
    import subprocess
    import sys

    from tests.testbed import UNDERLAY_GW

    pod_a, pod_b = testbed.add_pod(nodes[0]), testbed.add_pod(nodes[1])
    assert testbed.ping(pod_a, pod_b.ip, count=3)

    wan = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wan.bind((UNDERLAY_GW, 40000))
    wan.settimeout(20)
    try:
        testbed.pod_sh(pod_a, sys.executable, "-c", SEND, UNDERLAY_GW, "40000")
        _, (source, _) = wan.recvfrom(16)
    finally:
        wan.close()
    assert source == nodes[0].address

    receive = ["ip", "netns", "exec", pod_b.netns, sys.executable, "-c", RECEIVE, pod_b.ip, "40001"]
    listener = subprocess.Popen(receive, stdout=subprocess.PIPE, text=True)
    try:

        def sent() -> bool:
            testbed.pod_sh(pod_a, sys.executable, "-c", SEND, pod_b.ip, "40001")
            return listener.poll() is not None

        wait_for("the pod-to-pod datagram", sent, timeout=20, interval=0.5)
        out, _ = listener.communicate(timeout=10)
    finally:
        end_process(listener)
    assert out.strip() == pod_a.ip


@pytest.mark.kernel
@pytest.mark.etcd
def test_pod_traffic_leaving_the_cluster_is_masqueraded_and_pod_to_pod_is_not(
    testbed: Testbed,
) -> None:
    nodes = [testbed.add_node() for _ in range(2)]
    for node in nodes:
        testbed.start_daemon(node, "--ip-masq")
    for node in nodes:
        testbed.wait_subnet(node)
    testbed.wait_converged()
    wait_for("the masquerade rules", lambda: len(rules_shown(testbed, nodes[0], "nat")) == 8)
    assert_masquerades_only_traffic_leaving(testbed, nodes)


def test_rule_lines_render_as_iptables_lists_them() -> None:
    from backend.iptables import rule_line

    lines = [rule_line(r) for r in masq_rules(N, P, random_fully=True)]
    assert lines == [x.format(N=N, P=P) for x in MASQ_S if not x.startswith("-N")]


@pytest.mark.kernel
@pytest.mark.etcd
def test_ip_blackhole_route_is_added_and_kept(testbed: Testbed) -> None:
    node = testbed.add_node()
    testbed.start_daemon(node, "--ip-blackhole-route", "--iptables-resync=1")
    testbed.wait_subnet(node)
    subnet = testbed.subnet_of(node)

    def blackholes() -> list[str]:
        res = testbed.node_sh(node, "ip", "route", "show", "type", "blackhole")
        return res.stdout.split()

    wait_for("the blackhole route", lambda: subnet in blackholes(), timeout=15)
    testbed.node_sh(node, "ip", "route", "del", "blackhole", subnet)
    wait_for("the blackhole route back", lambda: subnet in blackholes(), timeout=15)
    # checked every second, added only when missing: one route, not one per check
    assert blackholes().count(subnet) == 1


# --- IPv6 (ip6tables) -----------------------------------------------------------------------------

# what `ip6tables -t nat -S` shows: flanneld's IPv4 rules with the IPv6 network, subnet and
# multicast range
MASQ6_S = [x.replace("224.0.0.0/4", "ff00::/8") for x in MASQ_S]


def test_ipv6_rules_are_the_ipv4_rules_with_ipv6_ranges() -> None:
    from backend.iptables import rule_line

    lines = [rule_line(r) for r in masq_rules(N6, P6, random_fully=True)]
    assert lines == [x.format(N=N6, P=P6) for x in MASQ6_S if not x.startswith("-N")]
    assert "-A FLANNEL-POSTRTG -s 2001:db8:42::/56 ! -d ff00::/8 " in lines[5]
    assert [rule_line(r) for r in forward_rules(N6)] == [
        x.format(N=N6) for x in FORWARD_S if not x.startswith("-N")
    ]


def test_mixed_or_bad_families_are_refused_with_the_value_named() -> None:
    with pytest.raises(ValueError, match="2001:db8:42:3::/64 is not of the family of"):
        masq_rules(N, P6, random_fully=True)
    with pytest.raises(ValueError, match="network 'nonsense' is not a CIDR"):
        forward_rules("nonsense")
    with pytest.raises(ValueError, match="is not of the family"):
        Family(ipaddress.ip_network(N6), ipaddress.ip_network(P))
    from backend.iptables import Iptables

    with pytest.raises(ValueError, match="4 or 6"):
        Iptables(5)


@contextlib.contextmanager
def one_node() -> Iterator[tuple[Testbed, Node]]:
    """A testbed node namespace of its own (no etcd, no daemon); removed afterwards."""
    tb = Testbed()
    try:
        yield tb, tb.add_node()
    finally:
        tb.cleanup()


def shown(tb: Testbed, node: Node, binary: str, table: str) -> list[str]:
    """The FLANNEL lines of `<binary> -t <table> -S` in the node's namespace."""
    res = tb.node_sh(node, binary, "-w", "-t", table, "-S")
    return [line for line in res.stdout.splitlines() if "FLANNEL" in line]


def v6_family(subnet: str = P6, previous: str | None = None) -> Family:
    net = ipaddress.ip_network(N6)
    old = (net, ipaddress.ip_network(previous)) if previous else (None, None)
    return Family(net, ipaddress.ip_network(subnet), *old)


@pytest.mark.kernel
def test_ipv6_rules_are_written_with_ip6tables_and_repaired() -> None:
    """The daemon-facing API asked for the IPv6 rule set (IPv6Network, own IPv6 subnet):
    flanneld's rules through ip6tables, none through iptables; a rule deleted by hand and a
    flushed chain come back at the next check; a new subnet replaces the old one's rules."""
    with one_node() as (tb, node), inside(node.netns):
        rules = TrafficRules(nftables=False, ip_masq=True, forward=True,
                             random_fully_disable=False, resync=1)  # fmt: skip
        rules.start([v6_family("2001:db8:42:7::/64")])
        rules = TrafficRules(nftables=False, ip_masq=True, forward=True,
                             random_fully_disable=False, resync=1)  # fmt: skip
        rules.start([v6_family(P6, previous="2001:db8:42:7::/64")])
        want_nat = [line.format(N=N6, P=P6) for line in MASQ6_S]
        want_filter = [line.format(N=N6) for line in FORWARD_S]
        assert shown(tb, node, "ip6tables", "nat") == want_nat  # the old subnet's rules gone
        assert shown(tb, node, "ip6tables", "filter") == want_filter
        assert shown(tb, node, "iptables", "nat") == shown(tb, node, "iptables", "filter") == []

        tb.node_sh(node, "ip6tables", "-w", "-t", "nat", "-D", "FLANNEL-POSTRTG", "-s", N6, "-d",
                   P6, "-m", "comment", "--comment", "flanneld masq", "-j", "RETURN")  # fmt: skip
        tb.node_sh(node, "ip6tables", "-w", "-t", "filter", "-F", "FLANNEL-FWD")
        assert len(shown(tb, node, "ip6tables", "nat")) == 7
        rules.keeper.check()
        assert shown(tb, node, "ip6tables", "nat") == want_nat
        assert shown(tb, node, "ip6tables", "filter") == want_filter
        assert rules.keeper.repairs == 2
        rules.keeper.check()  # nothing missing: nothing written
        assert rules.keeper.repairs == 2
