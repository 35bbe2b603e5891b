"""Checks of the node's kernel set-up that flanneld makes before it touches anything.

Bridged pod traffic only passes through iptables when the `br_netfilter` module is loaded; without
it, kube-proxy's service rules and flannel's own masquerade/forward rules miss pod-to-pod traffic on
the same bridge. flanneld therefore refuses to start in iptables mode when the module's sysctls are
absent (flannel `main.go`, the check of `/proc/sys/net/bridge/bridge-nf-call-iptables` and
`bridge-nf-call-ip6tables`); nftables mode skips the check.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

BRIDGE_SYSCTLS = "/proc/sys/net/bridge"
"""Where the kernel publishes br_netfilter's sysctls (per network namespace)."""


class PreflightError(RuntimeError):
    """The node is not set up the way flanneld needs; the message says how to fix it."""


def check_bridge_netfilter(
    families: Iterable[int], nftables: bool, root: str = BRIDGE_SYSCTLS
) -> None:
    """Require br_netfilter's `bridge-nf-call-iptables` (IPv4) / `bridge-nf-call-ip6tables`
    (IPv6) sysctl for each enabled address family in `families` (4 and/or 6), unless `nftables`.

    Raises PreflightError naming the missing file and the fix.
    """
    if nftables:
        return
    for family in families:
        name = "bridge-nf-call-iptables" if family == 4 else "bridge-nf-call-ip6tables"
        path = os.path.join(root, name)
        if not os.path.exists(path):
            raise PreflightError(
                f"{path} does not exist: the br_netfilter kernel module is not loaded, so "
                "bridged pod traffic would bypass iptables. Load it with `modprobe br_netfilter` "
                "and make it permanent with `echo br_netfilter > "
                "/etc/modules-load.d/br_netfilter.conf` (or set EnableNFTables in the network "
                "config to use nftables instead)"
            )
