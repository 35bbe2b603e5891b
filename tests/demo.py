"""`make demo`: a multi-node flannel overlay on one machine, end to end.

Builds the testbed (real etcd, one network namespace per node, flanneld-py per node, pods
created through the flannel CNI plugin), prints the nodes and pods, pings every pod from every pod
on another node, then decommissions one node (daemon stopped, lease deleted) and shows its routes
leave the other nodes. Exit status 0 only when every ping that should work did and the routes
went away. Everything is cleaned up at the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from tests.testbed import Node, Pod, Testbed, wait_for


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    lines = [line.rstrip() for line in lines]
    return "\n".join(lines)


def show_nodes(tb: Testbed, nodes: list[Node]) -> None:
    rows = [[n.name, n.address, tb.subnet_of(n), tb.vtep_mac(n)] for n in nodes]
    print(_table(["node", "public IP", "subnet", "VTEP MAC"], rows))


def show_pods(pods: list[Pod]) -> None:
    print(_table(["pod", "node", "IP"], [[p.name, p.node.name, p.ip] for p in pods]))


def ping_matrix(tb: Testbed, pods: list[Pod]) -> int:
    """Ping every pod from every pod on another node; print the matrix; return the failures."""
    failures = 0
    rows = []
    for src in pods:
        row = [f"{src.name} ({src.ip})"]
        for dst in pods:
            if dst.node is src.node:
                row.append("-")
                continue
            ok = tb.ping(src, dst.ip, count=3, timeout=2)
            failures += not ok
            row.append("OK" if ok else "FAIL")
        rows.append(row)
    print(_table(["from \\ to", *[p.name for p in pods]], rows))
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=3, help="number of nodes (2 to 50)")
    parser.add_argument("--pods", type=int, default=2, help="pods per node")
    args = parser.parse_args(argv)
    if not 2 <= args.nodes <= 50:
        parser.error("--nodes must be between 2 and 50")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    tb = Testbed()
    try:
        print(f"== starting etcd and {args.nodes} nodes, each running flanneld-py")
        tb.start_etcd()
        tb.put_config()
        nodes = tb.start_nodes(args.nodes)
        show_nodes(tb, nodes)

        print(f"\n== creating {args.pods} pods per node through the flannel CNI plugin")
        pods = [tb.add_pod(node) for node in nodes for _ in range(args.pods)]
        show_pods(pods)

        print("\n== cross-node pod-to-pod ping matrix")
        failures = ping_matrix(tb, pods)

        gone = nodes[-1]
        gone_subnet = tb.subnet_of(gone)
        print(f"\n== decommissioning {gone.name}: daemon stopped, lease {gone_subnet} deleted")
        tb.stop_daemon(gone)
        tb.client.delete(f"{tb.etcd_prefix}/subnets/{gone_subnet.replace('/', '-')}")
        for node in nodes[:-1]:
            wait_for(
                f"{gone_subnet} to leave {node.name}'s routes",
                lambda node=node: gone_subnet not in tb.routes(node),  # type: ignore[misc]
                timeout=30,
            )
            print(f"{node.name}: routes via flannel.1 now {sorted(tb.routes(node))}")

        total = sum(1 for s in pods for d in pods if s.node is not d.node)
        print(
            f"\n== {total - failures}/{total} cross-node pings OK; "
            f"{gone.name}'s routes removed from the other nodes; "
            f"{time.monotonic() - started:.1f} s"
        )
        return 0 if failures == 0 else 1
    except Exception as err:  # one clear line instead of a traceback; cleanup still runs
        print(f"demo failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        tb.cleanup()


if __name__ == "__main__":
    sys.exit(main())
