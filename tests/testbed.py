"""The testbed: several flannel nodes on one machine, with a real etcd and the real kernel.

Used by the integration tests, the demo and the benchmarks. It must run inside a private network
namespace (`tests/private-netns`), which holds the underlay bridge `br0` (198.18.0.254/24) and etcd;
each node is a named network namespace with `eth0` = 198.18.0.<i>/24 on that bridge, running
flanneld-py as its own process; each pod is a namespace below a node, created by CNI ADD through
the `flannel` plugin, which delegates to Debian's `bridge` and `host-local` plugins.

Everything carries a per-run prefix (`fpy<pid>-`), and `cleanup()` removes it all, killing only the
processes this testbed started, by PID. Leftovers of crashed runs (prefix of a dead PID) are removed
at start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tests.kubeapi import ApiServer

# The testbed's own etcd client is gRPC, and the testbed forks (subprocess with preexec_fn) to
# start daemons. With gRPC's fork handlers on, a forked child restarts gRPC's event-engine poller,
# and subprocess then closes the poller's epoll descriptor before exec: under load the child
# aborts ("Epoll1Poller ... epoll_wait error: Bad file descriptor", exit -6) before it ever runs
# the daemon (about 1 in 700 forks on a loaded machine; 0 in 2,000 with the handlers off).
# Set before anything imports grpc (conftest.py and the benchmarks import this module first).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

REPO = Path(__file__).resolve().parent.parent
CNI_PLUGINS = Path("/usr/lib/cni")
UNDERLAY_GW = "198.18.0.254"
ETCD_URL = f"http://{UNDERLAY_GW}:2379"
DEFAULT_NETWORK = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'
# the IPv6 underlay of a testbed built with families including 6 (documentation prefix)
UNDERLAY_GW6 = "2001:db8::fe"
ETCD_URL6 = f"http://[{UNDERLAY_GW6}]:2379"
POD_NETWORK6 = "fd10:244::/56"  # IPv6 pod network: exists only inside node and pod namespaces

T = TypeVar("T")


class TestbedError(RuntimeError):
    """The testbed could not be built or a condition was not reached in time."""


def in_private_netns() -> bool:
    """True inside the namespace made by `tests/private-netns` (it exports FPY_PRIVATE_NETNS)."""
    try:
        here = os.readlink("/proc/self/ns/net")
    except OSError:
        return False
    return bool(os.environ.get("FPY_PRIVATE_NETNS")) and os.environ["FPY_PRIVATE_NETNS"] == here


def sh(
    cmd: Sequence[str],
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; raises TestbedError with stderr when it fails."""
    res = subprocess.run(
        list(cmd), input=input, capture_output=True, text=True, env=env, timeout=timeout
    )
    if check and res.returncode != 0:
        raise TestbedError(
            f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}"
        )
    return res


def wait_for(what: str, probe: Callable[[], T], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy; raises TestbedError with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except Exception as err:  # a probe may fail while things come up
            last = err
        else:
            if last:
                return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise TestbedError(
                f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}"
            )
        time.sleep(interval)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int:
    """Signal a process this test started (by PID, if it still runs), wait up to `timeout`
    seconds, then kill it; returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def die_with_parent() -> None:
    """preexec_fn for processes the testbed starts: they get SIGKILL when the test process dies,
    even by SIGKILL, so a killed run leaves no etcd or daemon behind."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def inside(netns_name: str) -> Iterator[None]:
    """Sockets created in this block belong to namespace `netns_name` (setns on this thread
    only, no fork; pyroute2 `netns.pushns`)."""
    from pyroute2 import netns

    netns.pushns(netns_name)
    try:
        yield
    finally:
        netns.popns()


def remove_stale_namespaces() -> None:
    """Delete `fpy<pid>-*` namespaces and temporary directories whose creating process is gone
    (a crashed earlier run)."""
    for path in Path(tempfile.gettempdir()).glob("fpy*-*"):
        pid = path.name[3:].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    res = sh(["ip", "netns", "list"], check=False)
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith("fpy") or "-" not in name:
            continue
        pid = name[3:].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            sh(["ip", "netns", "del", name], check=False)


@dataclass
class Pod:
    """A pod: its namespace, container ID, node, and the IP its CNI ADD returned."""

    name: str
    netns: str
    container_id: str
    node: Node
    ip: str = ""
    ip6: str = ""  # its IPv6 address, in a network with IPv6


@dataclass
class Node:
    """A node namespace with its underlay address, work directory and flanneld-py process."""

    index: int
    netns: str
    address: str
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    pods: list[Pod] = field(default_factory=list)
    host_if: str = ""
    address6: str = ""  # its IPv6 underlay address, on a testbed with an IPv6 underlay

    @property
    def name(self) -> str:
        return f"node{self.index}"

    @property
    def subnet_file(self) -> Path:
        return self.workdir / "subnet.env"

    @property
    def log_file(self) -> Path:
        return self.workdir / "flanneld.log"

    def subnet_env(self) -> dict[str, str]:
        """The node's subnet.env as a dict ({} while it does not exist)."""
        try:
            text = self.subnet_file.read_text()
        except FileNotFoundError:
            return {}
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def log(self) -> str:
        try:
            return self.log_file.read_text()
        except FileNotFoundError:
            return ""


class Testbed:
    """Builds and tears down the multi-node overlay; see the module docstring."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        mtu: int = 1500,
        etcd_prefix: str = "/coreos.com/network",
        families: tuple[int, ...] = (4,),
    ) -> None:
        """`families`: the nodes' underlay address families, (4,), (6,) or (4, 6). With 6 the
        bridge also has 2001:db8::fe/64 and the nodes 2001:db8::<i>/64 and an IPv6 default
        route; without 4 the nodes have no IPv4 address and reach etcd over IPv6 (the bridge
        keeps its IPv4 address for the test's own etcd client)."""
        if not in_private_netns():
            raise TestbedError(
                "refusing to run in the machine's own network namespace; run "
                "through tests/private-netns (as `make test` and `make demo` do)"
            )
        if os.geteuid() != 0:
            raise TestbedError("the testbed needs root (network namespaces)")
        remove_stale_namespaces()
        self.prefix = f"fpy{os.getpid()}-"
        self.mtu = mtu
        self.etcd_prefix = etcd_prefix
        self.families = families
        self.workdir = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.nodes: list[Node] = []
        self.etcd: subprocess.Popen[bytes] | None = None
        self.kubeapi: ApiServer | None = None
        self._client: Any = None
        self._pod_count = 0
        self.cni_bin = self.workdir / "cni-bin"
        self._setup_underlay()
        self._setup_cni_bin()

    # --- underlay and etcd ----------------------------------------------------------------------

    def _setup_underlay(self) -> None:
        sh(["ip", "link", "set", "lo", "up"])
        sh(["ip", "link", "add", "br0", "mtu", str(self.mtu), "type", "bridge"])
        sh(["ip", "addr", "add", f"{UNDERLAY_GW}/24", "dev", "br0"])
        if 6 in self.families:
            sh(["ip", "addr", "add", f"{UNDERLAY_GW6}/64", "dev", "br0", "nodad"])
        sh(["ip", "link", "set", "br0", "up"])

    def _setup_cni_bin(self) -> None:
        self.cni_bin.mkdir()
        for plugin in ("bridge", "host-local", "loopback", "portmap"):
            (self.cni_bin / plugin).symlink_to(CNI_PLUGINS / plugin)
        wrapper = self.cni_bin / "flannel"
        wrapper.write_text(
            f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m flanneld_py.cni "$@"\n'
        )
        wrapper.chmod(0o755)

    def start_etcd(self) -> None:
        """Start etcd on the underlay address and wait until it answers."""
        peer = "http://127.0.0.1:2380"
        urls = ",".join([ETCD_URL] + ([ETCD_URL6] if 6 in self.families else []))
        args = ["--name", "fpy", "--data-dir", str(self.workdir / "etcd"),
                "--listen-client-urls", urls, "--advertise-client-urls", urls,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"fpy={peer}", "--log-level", "warn"]  # fmt: skip
        with open(self.workdir / "etcd.log", "ab") as log:
            self.etcd = subprocess.Popen(["etcd", *args], stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=die_with_parent)  # fmt: skip
        wait_for("etcd to answer", lambda: self.client.status() is not None, timeout=30)

    def stop_etcd(self) -> None:
        """Stop etcd (SIGTERM, by PID) and wait for it to exit."""
        if self.etcd is not None:
            end_process(self.etcd, timeout=20)
            self.etcd = None
            if self._client is not None:
                self._client.close()
                self._client = None

    def start_kubeapi(self, net_conf: str = DEFAULT_NETWORK) -> ApiServer:
        """Start the Kubernetes API emulator on the underlay address, with flannel's RBAC rights
        for the daemons' token, and write their kubeconfig and net-conf.json. Nodes added after
        this get a Node object with podCIDR 10.244.<i>.0/24 (and fd10:244:0:<i>::/64 on a
        testbed with IPv6; only that one without IPv4), as the controller manager would."""
        from tests.kubeapi import FLANNEL_RULES
        from tests.kubeapi import ApiServer as Server

        host = UNDERLAY_GW if 4 in self.families else UNDERLAY_GW6  # what the nodes reach
        self.kubeapi = Server(host=host, port=6443, tokens={"flannel": FLANNEL_RULES},
                              bookmark_interval=5.0).start()  # fmt: skip
        self.kubeapi.write_kubeconfig(self.workdir / "kubeconfig", token="flannel")
        (self.workdir / "net-conf.json").write_text(net_conf)
        return self.kubeapi

    @property
    def client(self) -> Any:
        """An etcd client (etcd-sdk-python) for the test's own reads and writes."""
        if self._client is None:
            import pyetcd

            self._client = pyetcd.MultiEndpointEtcd3Client(
                endpoints=[pyetcd.Endpoint(UNDERLAY_GW, 2379, secure=False, time_retry=0.5)],
                timeout=5,
                failover=True,
            )
        return self._client

    def put_config(self, config: str = DEFAULT_NETWORK) -> None:
        """Write the network config to `<prefix>/config`."""
        self.client.put(f"{self.etcd_prefix}/config", config)

    def leases(self) -> dict[str, bytes]:
        """Every subnet key (`10.244.3.0-24`) and its value."""
        out = {}
        for value, meta in self.client.get_prefix(f"{self.etcd_prefix}/subnets/"):
            out[meta.key.decode().rsplit("/", 1)[1]] = value
        return out

    # --- nodes ----------------------------------------------------------------------------------

    def add_node(self, pod_cidr: bool = True) -> Node:
        """Create the next node namespace, wired to the underlay bridge (and, in kube mode, its
        Node object, with a podCIDR unless `pod_cidr` is False)."""
        i = len(self.nodes) + 1
        node = Node(i, f"{self.prefix}n{i}", f"198.18.0.{i}", self.workdir / f"n{i}")
        node.workdir.mkdir()
        host_if = node.host_if = f"v{os.getpid() % 100000}n{i}"
        sh(["ip", "netns", "add", node.netns])
        sh(
            [
                "ip",
                "link",
                "add",
                host_if,
                "mtu",
                str(self.mtu),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                node.netns,
            ]
        )
        sh(["ip", "link", "set", host_if, "master", "br0", "up"])
        self.node_sh(node, "ip", "link", "set", "lo", "up")
        if 4 in self.families:
            self.node_sh(node, "ip", "addr", "add", f"{node.address}/24", "dev", "eth0")
        if 6 in self.families:
            node.address6 = f"2001:db8::{i}"
            self.node_sh(node, "ip", "addr", "add", f"{node.address6}/64", "dev", "eth0", "nodad")
        self.node_sh(node, "ip", "link", "set", "eth0", "mtu", str(self.mtu), "up")
        if 4 in self.families:
            self.node_sh(node, "ip", "route", "add", "default", "via", UNDERLAY_GW)
        self.node_sh(node, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        if 6 in self.families:
            self.node_sh(node, "ip", "-6", "route", "add", "default", "via", UNDERLAY_GW6)
            self.node_sh(node, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
        self.nodes.append(node)
        if self.kubeapi is not None and pod_cidr:
            cidrs = [f"10.244.{i}.0/24"] if 4 in self.families else []
            cidrs += [f"fd10:244:0:{i}::/64"] if 6 in self.families else []
            self.kubeapi.add_node(node.name, pod_cidrs=cidrs,
                                  internal_ip=node.address)  # fmt: skip
        return node

    def start_nodes(self, count: int) -> list[Node]:
        """Add `count` nodes, start their daemons, and wait for subnets and full mesh routes."""
        nodes = [self.add_node() for _ in range(count)]
        for node in nodes:
            self.start_daemon(node)
        for node in nodes:
            self.wait_subnet(node)
        self.wait_converged()
        return nodes

    def node_sh(
        self, node: Node, *cmd: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a node's namespace."""
        return sh(["ip", "netns", "exec", node.netns, *cmd], check=check, timeout=timeout)

    def start_daemon(
        self,
        node: Node,
        *extra: str,
        env: dict[str, str] | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        """Start flanneld-py in the node's namespace (output appended to the node's log).

        With the Kubernetes API emulator started (`start_kubeapi`), the daemon runs in kube mode
        as the Node named after the testbed node (`NODE_NAME`, unless `env` says otherwise);
        otherwise against the testbed's etcd. `env` adds environment variables; `wrap` is a
        command prefix that runs the daemon's command line (inside the node's namespace).
        """
        cmd = ["ip", "netns", "exec", node.netns, *wrap, sys.executable, "-m", "flanneld_py",
               f"--subnet-file={node.subnet_file}"]  # fmt: skip
        extra_env = env or {}
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        if self.kubeapi is not None:
            cmd += ["--kube-subnet-mgr", f"--kubeconfig-file={self.workdir / 'kubeconfig'}",
                    f"--net-config-path={self.workdir / 'net-conf.json'}"]  # fmt: skip
            if "POD_NAME" not in extra_env:
                env["NODE_NAME"] = node.name
        else:
            url = ETCD_URL if 4 in self.families else ETCD_URL6
            cmd += [f"--etcd-endpoints={url}", f"--etcd-prefix={self.etcd_prefix}"]
        env.update(extra_env)
        cmd += extra
        with open(node.log_file, "ab") as log:
            node.process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
                preexec_fn=die_with_parent,
            )

    def stop_daemon(self, node: Node, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the node's daemon (by PID) and wait for it; returns its exit status."""
        proc = node.process
        if proc is None:
            return 0
        node.process = None
        return end_process(proc, sig, timeout)

    def wait_subnet(self, node: Node, timeout: float = 60) -> str:
        """Wait for the node's subnet.env; returns FLANNEL_SUBNET (FLANNEL_IPV6_SUBNET in an
        IPv6-only network)."""

        def probe() -> str:
            if node.process is not None and node.process.poll() is not None:
                raise TestbedError(
                    f"flanneld-py on {node.name} exited with "
                    f"{node.process.returncode}:\n{node.log()[-3000:]}"
                )
            env = node.subnet_env()
            return env.get("FLANNEL_SUBNET") or env.get("FLANNEL_IPV6_SUBNET", "")

        try:
            return wait_for(f"{node.name}'s subnet.env", probe, timeout)
        except TestbedError as err:
            raise TestbedError(f"{err}\n--- {node.name} log ---\n{node.log()[-3000:]}") from None

    def routes(self, node: Node, dev: str = "flannel.1") -> set[str]:
        """Destinations of the node's routes through the overlay device (IPv6 routes for
        `flannel-v6.<VNI>`)."""
        family = ["-6"] if dev.startswith("flannel-v6") else []
        res = self.node_sh(node, "ip", *family, "-j", "route", "show", "dev", dev, check=False)
        if res.returncode != 0 or not res.stdout.strip():
            return set()
        return {r["dst"] for r in json.loads(res.stdout)}

    def neighbours(self, node: Node, dev: str = "flannel.1") -> dict[str, str]:
        """Permanent neighbour entries of the overlay device: {IP: MAC}."""
        res = self.node_sh(
            node, "ip", "-j", "neigh", "show", "dev", dev, "nud", "permanent", check=False
        )
        if res.returncode != 0 or not res.stdout.strip():
            return {}
        return {n["dst"]: n.get("lladdr", "") for n in json.loads(res.stdout)}

    def fdb(self, node: Node, dev: str = "flannel.1") -> set[tuple[str, str]]:
        """FDB entries of the overlay device with a remote: {(MAC, remote IP)}."""
        res = self.node_sh(node, "bridge", "-j", "fdb", "show", "dev", dev, check=False)
        if res.returncode != 0 or not res.stdout.strip():
            return set()
        return {(e["mac"], e["dst"]) for e in json.loads(res.stdout) if "dst" in e}

    def vtep_mac(self, node: Node, dev: str = "flannel.1") -> str:
        """The MAC of the node's overlay device."""
        res = self.node_sh(node, "ip", "-j", "link", "show", dev)
        return str(json.loads(res.stdout)[0]["address"])

    def subnet_of(self, node: Node) -> str:
        """The node's subnet in CIDR form (`10.244.3.0/24`), from its subnet.env."""
        import ipaddress

        return str(ipaddress.ip_interface(node.subnet_env()["FLANNEL_SUBNET"]).network)

    def subnet6_of(self, node: Node) -> str:
        """The node's IPv6 subnet in CIDR form (`fd10:244:0:3::/64`), from its subnet.env."""
        import ipaddress

        return str(ipaddress.ip_interface(node.subnet_env()["FLANNEL_IPV6_SUBNET"]).network)

    def wait_converged(self, timeout: float = 60) -> None:
        """Wait until every running node has a route to every other running node's subnet (of
        each family its subnet.env has, through that family's device)."""
        running = [n for n in self.nodes if n.process is not None]
        for node in running:
            for key, dev, subnet in (
                ("FLANNEL_SUBNET", "flannel.1", self.subnet_of),
                ("FLANNEL_IPV6_SUBNET", "flannel-v6.1", self.subnet6_of),
            ):
                if key not in node.subnet_env():
                    continue
                want = {subnet(o) for o in running if o is not node}

                def has_routes(node: Node = node, want: set[str] = want, dev: str = dev) -> bool:
                    return want <= self.routes(node, dev)

                wait_for(f"{node.name} to have routes to {sorted(want)}", has_routes, timeout)

    # --- pods -----------------------------------------------------------------------------------

    def cni_conf(self, node: Node) -> dict[str, Any]:
        """The flannel plugin's network config for a node (as kubelet would pass it)."""
        return {
            "cniVersion": "0.3.1",
            "name": "cbr0",
            "type": "flannel",
            "subnetFile": str(node.subnet_file),
            "dataDir": str(node.workdir / "cni-flannel"),
            "ipam": {"dataDir": str(node.workdir / "cni-ipam")},
            "delegate": {"hairpinMode": True, "isDefaultGateway": True},
        }

    def cni(self, node: Node, command: str, pod: Pod) -> subprocess.CompletedProcess[str]:
        """Run the flannel CNI plugin in the node's namespace for `pod`."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": pod.container_id,
            "CNI_NETNS": f"/run/netns/{pod.netns}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.cni_bin),
        }
        return sh(
            ["ip", "netns", "exec", node.netns, str(self.cni_bin / "flannel")],
            input=json.dumps(self.cni_conf(node)),
            env=env,
            check=False,
        )

    def add_pod(self, node: Node) -> Pod:
        """Create a pod namespace on `node` and attach it with CNI ADD; returns the pod."""
        self._pod_count += 1
        j = len(node.pods) + 1
        pod = Pod(
            f"{node.name}-pod{j}", f"{node.netns}-p{j}", f"{self.prefix}c{self._pod_count}", node
        )
        sh(["ip", "netns", "add", pod.netns])
        sh(["ip", "netns", "exec", pod.netns, "ip", "link", "set", "lo", "up"])
        res = self.cni(node, "ADD", pod)
        if res.returncode != 0:
            raise TestbedError(f"CNI ADD for {pod.name} failed: {res.stdout} {res.stderr}")
        result = json.loads(res.stdout)
        addresses = [ip["address"].split("/")[0] for ip in result["ips"]]
        pod.ip = addresses[0]
        pod.ip6 = next((a for a in addresses if ":" in a), "")
        node.pods.append(pod)
        return pod

    def del_pod(self, pod: Pod) -> None:
        """CNI DEL, then delete the pod namespace."""
        res = self.cni(pod.node, "DEL", pod)
        if res.returncode != 0:
            raise TestbedError(f"CNI DEL for {pod.name} failed: {res.stdout} {res.stderr}")
        sh(["ip", "netns", "del", pod.netns], check=False)
        pod.node.pods.remove(pod)

    def ping(self, pod: Pod, ip: str, count: int = 1, timeout: int = 2) -> bool:
        """True when `ip` answers at least one of `count` pings (0.2 s apart) from `pod`."""
        cmd = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(timeout), ip]
        res = self.pod_sh(pod, *cmd, check=False, timeout=timeout * count + 10)
        return res.returncode == 0

    def cross_node_ping_failures(self, pods: list[Pod]) -> list[tuple[str, str]]:
        """(pod, unreachable IP) for every pod that cannot ping a pod on another node."""
        return [
            (src.name, dst.ip)
            for src in pods
            for dst in pods
            if src.node is not dst.node and not self.ping(src, dst.ip, count=3)
        ]

    def pod_sh(
        self, pod: Pod, *cmd: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a pod's namespace."""
        return sh(["ip", "netns", "exec", pod.netns, *cmd], check=check, timeout=timeout)

    # --- teardown -------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop every process this testbed started and delete its namespaces and files."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self.stop_daemon(node, signal.SIGKILL, timeout=10)
        with contextlib.suppress(Exception):
            self.stop_etcd()
        if self.kubeapi is not None:
            with contextlib.suppress(Exception):
                self.kubeapi.stop()
        for node in self.nodes:  # synchronously: a namespace's deletion frees its links later
            sh(["ip", "link", "del", node.host_if], check=False)
        res = sh(["ip", "netns", "list"], check=False)
        for line in res.stdout.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(self.prefix):
                sh(["ip", "netns", "del", name], check=False)
        with contextlib.suppress(Exception):
            sh(["ip", "link", "del", "br0"], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


# --- a second underlay network behind a router (VXLAN DirectRouting tests) ------------------------

ROUTER_UNDERLAY, ROUTER_FAR = "198.18.0.253", "198.18.1.254"


def add_router(tb: Testbed) -> str:
    """A router namespace on the underlay bridge, 198.18.0.253 and 198.18.1.254 on one link,
    forwarding between the two networks; returns its namespace name. Deleted with the testbed's
    namespaces (its name carries the testbed's prefix)."""
    ns = f"{tb.prefix}rt"
    host_if = f"v{os.getpid() % 100000}rt"
    sh(["ip", "netns", "add", ns])
    sh(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns])
    sh(["ip", "link", "set", host_if, "master", "br0", "up"])
    for cmd in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "link", "set", "eth0", "up"],
        ["ip", "addr", "add", f"{ROUTER_UNDERLAY}/24", "dev", "eth0"],
        ["ip", "addr", "add", f"{ROUTER_FAR}/24", "dev", "eth0"],
        ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"],
        ["sysctl", "-q", "-w", "net.ipv4.conf.all.send_redirects=0"],
        ["sysctl", "-q", "-w", "net.ipv4.conf.eth0.send_redirects=0"],
    ):
        sh(["ip", "netns", "exec", ns, *cmd])
    # the underlay gateway (this test's namespace, where etcd listens) answers the far network
    # through the router; the route goes with br0 when the testbed is cleaned up
    sh(["ip", "route", "add", "198.18.1.0/24", "via", ROUTER_UNDERLAY, "dev", "br0"])
    return ns


def move_behind_router(tb: Testbed, node: Node) -> None:
    """Renumber a node (before its daemon starts) to 198.18.1.<i>, reached through the router."""
    old, new = node.address, f"198.18.1.{node.index}"
    tb.node_sh(node, "ip", "addr", "del", f"{old}/24", "dev", "eth0")
    tb.node_sh(node, "ip", "addr", "add", f"{new}/24", "dev", "eth0")
    tb.node_sh(node, "ip", "route", "replace", "default", "via", ROUTER_FAR)
    node.address = new


DIRECT_ROUTING_NETWORK = (
    '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": true}}'
)


def start_direct_routing_nodes(tb: Testbed, *extra: str) -> list[Node]:
    """Three vxlan nodes with DirectRouting, daemons started with the `extra` flags and their
    subnets waited for: n1 and n2 share 198.18.0.0/24 (each reaches the other directly), n3 is
    on 198.18.1.0/24 behind the router of `add_router` (reached through the overlay)."""
    tb.put_config(DIRECT_ROUTING_NETWORK)
    add_router(tb)
    nodes = [tb.add_node() for _ in range(3)]
    move_behind_router(tb, nodes[2])
    for node in nodes[:2]:
        tb.node_sh(node, "ip", "route", "add", "198.18.1.0/24", "via", ROUTER_UNDERLAY)
    for node in nodes:
        tb.start_daemon(node, *extra)
    for node in nodes:
        tb.wait_subnet(node)
    return nodes
