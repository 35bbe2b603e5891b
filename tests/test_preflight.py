"""The br_netfilter check of flanneld's start-up (flannel-behaviour.md §0 step 7)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flanneld_py.preflight import PreflightError, check_bridge_netfilter
from tests.testbed import Testbed


def _sysctls(tmp_path: Path, *names: str) -> str:
    for name in names:
        (tmp_path / name).write_text("1\n")
    return str(tmp_path)


def test_present_sysctls_pass(tmp_path: Path) -> None:
    root = _sysctls(tmp_path, "bridge-nf-call-iptables", "bridge-nf-call-ip6tables")
    check_bridge_netfilter((4, 6), nftables=False, root=root)


def test_missing_ipv4_sysctl_names_the_file_and_the_fix(tmp_path: Path) -> None:
    root = _sysctls(tmp_path, "bridge-nf-call-ip6tables")
    with pytest.raises(PreflightError) as err:
        check_bridge_netfilter((4,), nftables=False, root=root)
    assert f"{root}/bridge-nf-call-iptables does not exist" in str(err.value)
    assert "modprobe br_netfilter" in str(err.value)


def test_ipv6_checked_only_when_enabled(tmp_path: Path) -> None:
    root = _sysctls(tmp_path, "bridge-nf-call-iptables")
    check_bridge_netfilter((4,), nftables=False, root=root)
    with pytest.raises(PreflightError, match="bridge-nf-call-ip6tables does not exist"):
        check_bridge_netfilter((4, 6), nftables=False, root=root)


def test_nftables_mode_skips_the_check(tmp_path: Path) -> None:
    check_bridge_netfilter((4, 6), nftables=True, root=str(tmp_path))


# the daemon in a node namespace whose /proc/sys/net/bridge is hidden (a private mount namespace
# with an empty tmpfs over it), as on a node without the br_netfilter module
WITHOUT_BR_NETFILTER = (
    "unshare", "--mount", "sh", "-c",
    'mount -t tmpfs tmpfs /proc/sys/net/bridge && exec "$@"', "sh",
)  # fmt: skip


@pytest.mark.kernel
@pytest.mark.etcd
def test_daemon_without_br_netfilter_exits_saying_how_to_fix_it(testbed: Testbed) -> None:
    node = testbed.add_node()
    testbed.start_daemon(node, wrap=WITHOUT_BR_NETFILTER)
    assert node.process is not None
    assert node.process.wait(timeout=60) == 1
    log = node.log()
    assert "/proc/sys/net/bridge/bridge-nf-call-iptables does not exist" in log, log
    assert "modprobe br_netfilter" in log
    assert not os.path.exists(node.subnet_file)


@pytest.mark.kernel
@pytest.mark.etcd
def test_nftables_mode_starts_without_br_netfilter(testbed: Testbed) -> None:
    testbed.put_config(
        json.dumps(
            {"Network": "10.244.0.0/16", "EnableNFTables": True, "Backend": {"Type": "vxlan"}}
        )
    )
    node = testbed.add_node()
    testbed.start_daemon(node, wrap=WITHOUT_BR_NETFILTER)
    testbed.wait_subnet(node)
