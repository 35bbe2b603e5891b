"""`flanneld-py`: the command line, with flanneld's flags and their defaults (flannel `main.go`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from flanneld_py import __version__
from flanneld_py.flags import Flag, FlagError, HelpRequested, parse_flags, usage
from flanneld_py.logs import setup_logging

FLAGS: list[Flag] = [
    Flag(
        "etcd-endpoints",
        "str",
        "http://127.0.0.1:4001,http://127.0.0.1:2379",
        "comma-separated list of etcd endpoints (http:// or https:// URLs)",
    ),
    Flag("etcd-prefix", "str", "/coreos.com/network", "etcd prefix of the network's keys"),
    Flag(
        "etcd-keyfile",
        "str",
        "",
        "TLS client key for etcd (TLS is used when both keyfile and certfile are set)",
    ),
    Flag("etcd-certfile", "str", "", "TLS client certificate for etcd"),
    Flag("etcd-cafile", "str", "", "CA certificate that signed etcd's server certificate"),
    Flag("etcd-username", "str", "", "username for etcd authentication"),
    Flag("etcd-password", "str", "", "password for etcd authentication"),
    Flag(
        "kube-subnet-mgr",
        "bool",
        False,
        "take the subnet from the Kubernetes Node (spec.podCIDR) instead of etcd",
    ),
    Flag("kube-api-url", "str", "", "Kubernetes API server URL (kube mode)"),
    Flag("kubeconfig-file", "str", "", "kubeconfig file (kube mode)"),
    Flag(
        "kube-annotation-prefix",
        "str",
        "flannel.alpha.coreos.com",
        "prefix of the Node annotations flannel writes (kube mode)",
    ),
    Flag(
        "iface",
        "list",
        [],
        "interface to use for inter-host traffic, by name or IP address; "
        "repeat to give fallbacks, tried in order (default: the default route's interface)",
    ),
    Flag(
        "iface-regex",
        "list",
        [],
        "regex matching the interface's IP addresses or name; tried after every --iface",
    ),
    Flag(
        "iface-can-reach",
        "str",
        "",
        "use the interface of the route to this IP address; tried after every --iface-regex",
    ),
    Flag(
        "public-ip",
        "str",
        "",
        "IPv4 address peers use to reach this node (default: the interface's address)",
    ),
    Flag(
        "public-ipv6",
        "str",
        "",
        "IPv6 address peers use to reach this node (default: the interface's IPv6 address)",
    ),
    Flag(
        "subnet-file",
        "str",
        "/run/flannel/subnet.env",
        "file flanneld writes the node's subnet, network, MTU and IP masquerade setting to",
    ),
    Flag(
        "net-config-path",
        "str",
        "/etc/kube-flannel/net-conf.json",
        "network config file (kube mode)",
    ),
    Flag(
        "subnet-lease-renew-margin",
        "int",
        60,
        "renew the etcd lease this many minutes before it expires (1 to 1439)",
    ),
    Flag(
        "ip-masq",
        "bool",
        False,
        "masquerade traffic leaving the flannel network (nat chain FLANNEL-POSTRTG of iptables "
        "and ip6tables, or chain postrtg of the nftables tables with EnableNFTables; subnet.env "
        "says FLANNEL_IPMASQ=true, so the CNI plugin leaves masquerading to flanneld)",
    ),
    Flag(
        "ip-masq-fully-random-disable",
        "bool",
        False,
        "do not use --random-fully (nftables: fully-random) in the masquerade rule",
    ),
    Flag(
        "iptables-resync",
        "int",
        5,
        "seconds between checks of the masquerade and forward rules (iptables or nftables, "
        "rewritten when missing) and of the --ip-blackhole-route route",
    ),
    Flag(
        "iptables-forward-rules",
        "bool",
        True,
        "add FORWARD accept rules for the flannel network (filter chain FLANNEL-FWD, or chain "
        "forward of the nftables tables with EnableNFTables)",
    ),
    Flag(
        "ip-blackhole-route",
        "bool",
        False,
        "add a blackhole route for this node's subnet (checked every --iptables-resync seconds), "
        "for setups without the bridge plugin",
    ),
    Flag("healthz-ip", "str", "0.0.0.0", "address the health server listens on"),
    Flag(
        "healthz-port",
        "int",
        0,
        "port of the HTTP server (0 disables it): /healthz (liveness), /readyz (200 once "
        "subnet.env is written and the first peer sync is in the kernel) and /metrics "
        "(Prometheus)",
    ),
    Flag(
        "set-node-network-unavailable",
        "bool",
        True,
        "set the Node's NetworkUnavailable condition to False once running (kube mode)",
    ),
    Flag(
        "resync-period",
        "float",
        30.0,
        "seconds between full comparisons of the kernel's "
        "neighbour, FDB and route entries with the peer table (flanneld-py only)",
    ),
    Flag(
        "podcidr-wait",
        "float",
        600.0,
        "kube mode: seconds to wait for this node's spec.podCIDR before exiting with an error "
        "(0 waits forever); a message says why every 30 s meanwhile (flanneld-py only)",
    ),
    Flag("version", "bool", False, "print the version and exit", from_env=False),
    Flag(
        "v",
        "int",
        0,
        "log verbosity: 0 logs lease and peer events, 1 adds debug detail, 3 "
        "adds every netlink message",
    ),
    Flag(
        "log-format",
        "str",
        "text",
        "text (human-readable lines) or json (one object per "
        "line: time, level, logger, msg) (flanneld-py only)",
    ),
    Flag(
        "vmodule",
        "str",
        "",
        "comma-separated pattern=N: debug lines (N>0) of the source files whose name (without .py) "
        "matches the glob pattern, e.g. reconcile=1,etcd*=1 (klog syntax)",
    ),
    Flag(
        "log_backtrace_at",
        "str",
        "",
        "file.py:line: attach the call stack to what is logged from that line (klog syntax)",
    ),
]

STATUS_HELP = (
    "flanneld-py status [flags] [--json] checks this node: lease, subnet.env, device, "
    "and the kernel's entries against the datastore (see flanneld-py status --help)."
)

INTRO = (
    "flanneld-py gives this node a subnet of the cluster's pod network (IPv4, IPv6 or dual "
    "stack), leased from etcd or, with --kube-subnet-mgr, taken from the Node's podCIDR, "
    "writes it to subnet.env for the flannel CNI plugin, and programs the routes to every "
    "other node. Backends (the network config's Backend.Type): vxlan (the default; an overlay "
    "device, with DirectRouting a plain route to peers on this node's network), host-gw "
    "(routes via the peers' addresses; all nodes on one L2 network), and alloc, which only "
    "leases the subnet and writes subnet.env (no device, no peers). It is a drop-in "
    "replacement for flanneld."
)


@dataclass
class Options:
    """Parsed flags; attribute names are the flag names with `-` replaced by `_`."""

    etcd_endpoints: str = ""
    etcd_prefix: str = ""
    etcd_keyfile: str = ""
    etcd_certfile: str = ""
    etcd_cafile: str = ""
    etcd_username: str = ""
    etcd_password: str = ""
    kube_subnet_mgr: bool = False
    kube_api_url: str = ""
    kubeconfig_file: str = ""
    kube_annotation_prefix: str = ""
    iface: list[str] = field(default_factory=list)
    iface_regex: list[str] = field(default_factory=list)
    iface_can_reach: str = ""
    public_ip: str = ""
    public_ipv6: str = ""
    subnet_file: str = ""
    net_config_path: str = ""
    subnet_lease_renew_margin: int = 60
    ip_masq: bool = False
    ip_masq_fully_random_disable: bool = False
    iptables_resync: int = 5
    iptables_forward_rules: bool = True
    ip_blackhole_route: bool = False
    healthz_ip: str = ""
    healthz_port: int = 0
    set_node_network_unavailable: bool = True
    resync_period: float = 30.0
    podcidr_wait: float = 600.0
    version: bool = False
    v: int = 0
    log_format: str = "text"
    vmodule: str = ""
    log_backtrace_at: str = ""


def parse_options(argv: Sequence[str], environ: dict[str, str] | None = None) -> Options:
    """Parse the command line and FLANNELD_* variables. Raises FlagError, HelpRequested."""
    values, rest = parse_flags(FLAGS, argv, environ)
    if rest:
        raise FlagError(f"unexpected argument {rest[0]!r}: flanneld takes only flags (see --help)")
    return Options(**values)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `flanneld-py`; returns the process exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "version":
        print(__version__)
        return 0
    if args and args[0] == "status":
        from flanneld_py.status import main as status_main

        return status_main(args[1:])
    try:
        opts = parse_options(args)
    except HelpRequested:
        sys.stdout.write(usage("flanneld-py", FLAGS, INTRO + " " + STATUS_HELP))
        return 0
    except FlagError as err:
        print(f"flanneld-py: {err}", file=sys.stderr)
        return 2
    if opts.version:
        print(__version__, file=sys.stderr)
        return 0
    try:
        setup_logging(opts.log_format, opts.v, opts.vmodule, opts.log_backtrace_at)
    except ValueError as err:
        print(f"flanneld-py: {err}", file=sys.stderr)
        return 2
    from flanneld_py.daemon import run  # heavy imports (grpc, pyroute2) only for the daemon

    return run(opts)
