"""The Kubernetes subnet manager: the node's subnet is its `spec.podCIDR`, peers are Nodes.

As flanneld's `--kube-subnet-mgr` (flannel `pkg/subnet/kube/kube.go`): the network config comes
from a file (net-conf.json of the ConfigMap); the node's own subnet is assigned by the controller
manager (`--allocate-node-cidrs`); the node publishes its VTEP through annotations patched on the
`nodes/status` subresource (so RBAC needs only `nodes/status: patch`), and sets the
`NetworkUnavailable=False` condition once running. Every Node is listed and watched; a peer is a
Node marked `kube-subnet-manager: "true"`.

Where flannel falls short this does better: a node still waiting for its podCIDR logs why, now and
then, instead of crash-looping (and gives up only after `podcidr_wait` seconds); a change in either
address family or in the pod CIDRs of a peer is noticed (README "Compared with flanneld"); a
malformed Node is skipped with one log line; only slim records are kept, and the watch resumes
from the last resourceVersion, re-lists after 410 Gone and honours bookmarks.

All API calls go through the official `kubernetes` client, reading raw JSON (no model objects) so
that thousands of Nodes cost little memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import config
from kubernetes.client.api_client import ApiClient
from kubernetes.client.configuration import Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from subnet.annotations import (
    AnnotationNames,
    node_name,
    node_to_lease,
    own_annotations,
    pod_cidrs,
    stored_mac,
)
from subnet.config import ConfigError, NetworkConfig, parse_config
from subnet.errors import DatastoreUnavailable, KubeError
from subnet.lease import Lease, LeaseAttrs, LeaseFormatError

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5.0, 30.0)  # seconds: connect, read (non-watch calls)
WATCH_TIMEOUT = 290  # seconds a watch request lasts before it is renewed (server-side timeout)
LIST_PAGE = 500  # Nodes per list page, to bound the memory of a list at scale


def api_client(api_url: str = "", kubeconfig: str = "") -> KubeApi:
    """The API from `--kube-api-url` / `--kubeconfig-file`, else from the pod's service account
    (in-cluster config). Raises KubeError when neither is usable."""
    cfg = Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        elif not api_url:
            config.load_incluster_config(client_configuration=cfg)
    except (config.ConfigException, OSError) as err:
        raise KubeError(
            f"no Kubernetes API access: {err} (use --kubeconfig-file or run in a "
            "pod with a service account)"
        ) from None
    if api_url:
        cfg.host = api_url
    return KubeApi(ApiClient(cfg))


class KubeApi:
    """The few Kubernetes API calls flanneld-py makes, returning raw JSON (dicts, no models).

    Built on the official client's `ApiClient` (kubeconfig and in-cluster configuration, TLS,
    bearer-token refresh). The generated `CoreV1Api` is not used: importing it costs about
    22 MiB for hundreds of calls flanneld-py never makes. Every method raises `ApiException`
    for an HTTP error status and urllib3/OS errors for connection failures.
    """

    def __init__(self, client: Any) -> None:
        self.api_client = client
        self.on_request: Callable[[str, bool], None] = lambda op, ok: None  # for metrics

    def _request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, Any]] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
    ) -> Any:
        """Send a request; returns the urllib3 response, unread (stream it or use `_json`)."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        if method == "PATCH":
            op = "patch"
        elif ("watch", "true") in (query or []):
            op = "watch"
        else:
            op = "list" if path.endswith("/nodes") else "get"
        method, url, headers, body, post = self.api_client.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body,
            auth_settings=["BearerToken"])  # fmt: skip
        try:
            resp = self.api_client.call_api(method, url, headers, body, post,
                                            _request_timeout=timeout)  # fmt: skip
        except API_ERRORS:
            self.on_request(op, False)
            raise
        raw = resp.response
        if not 200 <= int(raw.status) <= 299:
            self.on_request(op, False)
            try:
                reason = raw.data.decode(errors="replace")[:500]
            finally:
                raw.release_conn()
            raise ApiException(status=int(raw.status), reason=reason)
        self.on_request(op, True)
        return raw

    def _json(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raw = self._request(*args, **kwargs)
        try:
            data: dict[str, Any] = json.loads(raw.data)
            return data
        finally:
            raw.release_conn()

    def read_node(self, name: str) -> dict[str, Any]:
        """GET /api/v1/nodes/{name}."""
        return self._json("GET", f"/api/v1/nodes/{quote(name, safe='')}")

    def list_nodes(self, limit: int, cont: str | None = None) -> dict[str, Any]:
        """One page of GET /api/v1/nodes."""
        query: list[tuple[str, Any]] = [("limit", limit)]
        if cont:
            query.append(("continue", cont))
        return self._json("GET", "/api/v1/nodes", query)

    def watch_nodes(self, resource_version: str, timeout_seconds: int) -> Any:
        """GET /api/v1/nodes?watch=true from `resource_version`, with bookmarks; the raw
        response, to be read line by line."""
        query = [("watch", "true"), ("resourceVersion", resource_version),
                 ("allowWatchBookmarks", "true"), ("timeoutSeconds", timeout_seconds)]  # fmt: skip
        return self._request("GET", "/api/v1/nodes", query,
                             timeout=(REQUEST_TIMEOUT[0], timeout_seconds + 30.0))  # fmt: skip

    def patch_node_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PATCH /api/v1/nodes/{name}/status with a strategic merge patch."""
        return self._json("PATCH", f"/api/v1/nodes/{quote(name, safe='')}/status", body=body,
                          content_type="application/strategic-merge-patch+json")  # fmt: skip

    def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """GET /api/v1/namespaces/{namespace}/pods/{name}."""
        return self._json(
            "GET", f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"
        )

    def close(self) -> None:
        """Close the connection pool."""
        self.api_client.close()


def _status(err: Exception) -> int:
    return int(getattr(err, "status", 0) or 0)


API_ERRORS: tuple[type[Exception], ...] = (ApiException, urllib3.exceptions.HTTPError, OSError)
"""What a failed API call raises: an HTTP status, or a connection-level failure."""
WATCH_ERRORS: tuple[type[Exception], ...] = (DatastoreUnavailable, ValueError, *API_ERRORS)


class KubeSubnetManager:
    """Own lease from the Node's podCIDR, peers from all Nodes (see the module docstring).

    `node` is this node's name; `podcidr_wait` seconds to wait for a podCIDR (0 = forever).
    `on_invalid(name, reason)` is called for every Node that cannot be read as a lease.
    """

    def __init__(
        self,
        api: KubeApi,
        node: str,
        net_conf_path: str,
        prefix: str,
        podcidr_wait: float = 600.0,
        set_network_unavailable: bool = True,
        on_invalid: Callable[[str, str], None] | None = None,
    ) -> None:
        self.api = api
        self.node = node
        self.net_conf_path = net_conf_path
        self.names = AnnotationNames.for_prefix(prefix)
        self.podcidr_wait = podcidr_wait
        self.set_network_unavailable = set_network_unavailable
        self.on_invalid = on_invalid or (lambda name, reason: None)
        self._views: dict[str, tuple[Any, ...]] = {}
        self._invalid_seen: dict[str, str] = {}
        self.cfg: NetworkConfig | None = None

    renews = False

    def own_key(self, lease: Lease) -> str:
        """Peers are keyed by node name."""
        return self.node

    def prefer(self, lease: Lease) -> None:
        """The podCIDR decides; nothing to prefer."""

    def close(self) -> None:
        """Close the API client's connections."""
        self.api.close()

    def observe_requests(self, hook: Callable[[str, bool], None]) -> None:
        """Report every API request to `hook(operation, succeeded)`."""
        self.api.on_request = hook

    @classmethod
    def node_name_from_env(cls, api: KubeApi, environ: dict[str, str] | None = None) -> str:
        """This node's name: `NODE_NAME`, else the `spec.nodeName` of pod `POD_NAMESPACE/POD_NAME`.

        Raises KubeError when neither is set or the pod cannot be read.
        """
        env = os.environ if environ is None else environ
        if env.get("NODE_NAME"):
            return env["NODE_NAME"]
        pod, ns = env.get("POD_NAME"), env.get("POD_NAMESPACE")
        if not pod or not ns:
            raise KubeError(
                "set NODE_NAME (downward API spec.nodeName), or both POD_NAME and "
                "POD_NAMESPACE, to tell flanneld-py which node it runs on"
            )
        try:
            data = api.read_pod(ns, pod)
        except API_ERRORS as err:
            raise KubeError(f"cannot read pod {ns}/{pod} to find its node: {err}") from None
        name = (data.get("spec") or {}).get("nodeName")
        if not name:
            raise KubeError(f"pod {ns}/{pod} has no spec.nodeName")
        return str(name)

    # --- config and own node --------------------------------------------------------------------

    def get_network_config(self) -> NetworkConfig:
        """Read and parse net-conf.json (not validated or defaulted: kube mode ignores
        SubnetLen/Min/Max, as flanneld does). Raises ConfigError, OSError."""
        try:
            with open(self.net_conf_path) as f:
                text = f.read()
        except OSError as err:
            raise ConfigError(
                "(file)", f"failed to read net conf {self.net_conf_path}: {err.strerror}"
            ) from None
        cfg = parse_config(text)
        if cfg.enable_ipv4 and cfg.network is None:
            raise ConfigError(
                "Network",
                "is required in kube mode too; set it to the cluster's "
                "pod network (the controller manager's --cluster-cidr)",
            )
        if cfg.enable_ipv6 and cfg.ipv6_network is None:
            raise ConfigError("IPv6Network", "is required when EnableIPv6 is true")
        self.cfg = cfg
        return cfg

    def read_node(self) -> dict[str, Any]:
        """This node's Node object (raw JSON). Raises DatastoreUnavailable, KubeError (404)."""
        try:
            return self.api.read_node(self.node)
        except API_ERRORS as err:
            if _status(err) == 404:
                raise KubeError(f"node {self.node!r} does not exist in the API server") from None
            if _status(err) in (401, 403):
                raise KubeError(f"not allowed to read node {self.node!r}: {err}") from None
            raise DatastoreUnavailable(f"kube API: {err}") from None

    def stored_public_ips(self) -> tuple[str, str]:
        """The `node-public-ip` / `node-public-ipv6` annotations ("" when absent): they replace
        `--public-ip` / `--public-ipv6` and so drive interface selection."""
        ann = (self.read_node().get("metadata") or {}).get("annotations") or {}
        return ann.get(self.names.node_public_ip, ""), ann.get(self.names.node_public_ipv6, "")

    def stored_macs(self) -> tuple[str | None, str | None]:
        """The VTEP MACs this node published before (backend-data, backend-v6-data)."""
        node = self.read_node()
        return (
            stored_mac(node, self.names.backend_data),
            stored_mac(node, self.names.backend_v6_data),
        )

    def _wait_for_podcidr(self, stop: threading.Event) -> dict[str, Any] | None:
        start = time.monotonic()
        last_log = -1e9
        while not stop.is_set():
            try:
                node = self.read_node()
                if pod_cidrs(node) != (None, None):
                    return node
                why = (
                    f"node {self.node!r} has no podCIDR yet; is the controller manager "
                    "running with --allocate-node-cidrs=true and a --cluster-cidr?"
                )
            except DatastoreUnavailable as err:
                why = str(err)
            waited = time.monotonic() - start
            if self.podcidr_wait and waited > self.podcidr_wait:
                raise KubeError(f"{why} (gave up after {self.podcidr_wait:.0f} s)")
            if waited - last_log >= 30:
                log.warning("%s; waiting", why)
                last_log = waited
            stop.wait(2.0)
        return None

    def acquire_lease(
        self, cfg: NetworkConfig, attrs: LeaseAttrs, stop: threading.Event | None = None
    ) -> Lease | None:
        """This node's lease from its podCIDR(s), after publishing `attrs` as annotations.

        Waits (see `podcidr_wait`) for a podCIDR; returns None if `stop` is set meanwhile.
        Raises KubeError for a podCIDR outside the network or a patch that is refused.
        """
        node = self._wait_for_podcidr(stop or threading.Event())
        if node is None:
            return None
        v4, v6 = pod_cidrs(node)
        for net, network, name in (
            (v4, cfg.network, "Network"),
            (v6, cfg.ipv6_network, "IPv6Network"),
        ):
            enabled = cfg.enable_ipv4 if name == "Network" else cfg.enable_ipv6
            if not enabled:
                continue
            if net is None:
                raise KubeError(
                    f"node {self.node!r} has no IPv{4 if name == 'Network' else 6} "
                    f"podCIDR, but the network config enables that family"
                )
            if network is None or not net.subnet_of(network):  # type: ignore[arg-type]
                raise KubeError(
                    f"node {self.node!r} podCIDR {net} is not inside the {name} "
                    f"{network} of {self.net_conf_path}"
                )
        patch = own_annotations(self.names, node, attrs)
        if patch:
            self._patch_status({"metadata": {"annotations": patch}}, "annotations")
            log.info(
                "published %s on node %s",
                ", ".join(sorted(k.rsplit("/", 1)[-1] for k in patch)),
                self.node,
            )
        return Lease(v4 if cfg.enable_ipv4 else None, v6 if cfg.enable_ipv6 else None, attrs)

    def _patch_status(self, body: dict[str, Any], what: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                self.api.patch_node_status(self.node, body)
                return
            except API_ERRORS as err:
                if _status(err) in (401, 403, 404, 422) or time.monotonic() > deadline:
                    raise KubeError(
                        f"cannot patch {what} of node {self.node!r} (nodes/status): {err}"
                    ) from None
                log.warning("patching %s of node %s failed (%s); retrying", what, self.node, err)
                time.sleep(3)

    def complete_lease(self) -> None:
        """Mark the node's network ready: condition NetworkUnavailable=False, reason FlannelIsUp
        (when `--set-node-network-unavailable`). Raises KubeError."""
        if not self.set_network_unavailable:
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._patch_status({"status": {"conditions": [{
            "type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
            "message": "Flannel is running on this node",
            "lastTransitionTime": now, "lastHeartbeatTime": now,
        }]}}, "the NetworkUnavailable condition")  # fmt: skip

    def renew_lease(self, lease: Lease) -> Lease:
        """Nothing to renew in kube mode: a podCIDR does not expire."""
        return lease

    # --- peers ----------------------------------------------------------------------------------

    def _lease_of(self, node: dict[str, Any]) -> Lease | None:
        name = node_name(node)
        assert self.cfg is not None
        try:
            lease = node_to_lease(node, self.names, self.cfg)
        except LeaseFormatError as err:
            if self._invalid_seen.get(name) != str(err):
                self._invalid_seen[name] = str(err)
                log.warning("skipping node %s: %s", name, err)
            self.on_invalid(name, str(err))
            raise
        self._invalid_seen.pop(name, None)
        return lease

    def _list(self) -> tuple[list[tuple[str, Lease]], str]:
        items: list[tuple[str, Lease]] = []
        cont: str | None = None
        views: dict[str, tuple[Any, ...]] = {}
        while True:
            page = self.api.list_nodes(LIST_PAGE, cont)
            for node in page.get("items") or []:
                name = node_name(node)
                views[name] = self.names.peer_view(node)
                try:
                    lease = self._lease_of(node)
                except LeaseFormatError:
                    continue
                if lease is not None:
                    items.append((name, lease))
            meta = page.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                self._views = views
                return items, str(meta.get("resourceVersion") or "")

    def _watch(self, rv: str, current: list[Any]) -> Iterator[dict[str, Any]]:
        resp = self.api.watch_nodes(rv, WATCH_TIMEOUT)
        current[:] = [resp]
        try:
            for line in iter_resp_lines(resp):
                if line:
                    yield json.loads(line)
        finally:
            current[:] = []
            resp.release_conn()

    def watch_leases(
        self,
        on_snapshot: Callable[[list[tuple[str, Lease]]], None],
        on_put: Callable[[str, Lease], None],
        on_delete: Callable[[str], None],
        stop: threading.Event,
        on_state: Callable[[str], None] = lambda state: None,
    ) -> None:
        """List then watch all Nodes until `stop` is set; peers are keyed by node name.

        A 410 Gone (history expired) leads to a re-list; a broken connection to a re-watch from
        the last resourceVersion after a backoff of 0.1 s doubling to 5 s. Updates that change
        nothing a peer uses (kubelet heartbeats) are dropped before any parsing.
        """
        rv: str | None = None
        backoff = 0.1
        current: list[Any] = []

        def stopper() -> None:
            stop.wait()
            for resp in list(current):
                with contextlib.suppress(Exception):  # it may have finished already
                    resp.shutdown()

        threading.Thread(target=stopper, name="kube-watch-stop", daemon=True).start()
        last_failure = ""
        while not stop.is_set():
            started = time.monotonic()
            try:
                if rv is None:
                    items, rv = self._list()
                    on_snapshot(items)
                    on_state("listed")
                on_state("watching")
                for event in self._watch(rv, current):
                    if last_failure:
                        log.info("node watch working again")
                        last_failure = ""
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            log.info("node watch history expired (410 Gone); re-listing")
                            on_state("expired")
                            rv = None
                            break
                        raise DatastoreUnavailable(f"kube watch error: {obj.get('message')}")
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if kind != "BOOKMARK":
                        try:
                            self._handle(kind, obj, on_put, on_delete)
                        except Exception:  # a bug must cost one event, never the watch
                            log.exception("could not handle a change of node %s; skipped",
                                          node_name(obj))  # fmt: skip
                    if new_rv:
                        rv = str(new_rv)
                    if stop.is_set():
                        return
            except WATCH_ERRORS as err:
                if stop.is_set():
                    return
                if _status(err) == 410:
                    rv = None
                    on_state("expired")
                else:
                    if str(err) != last_failure:  # once per problem, not once per retry
                        log.warning("node watch interrupted (%s); retrying with backoff", err)
                        last_failure = str(err)
                    on_state("unavailable")
            except Exception:  # a bug must not end the watch: log it, re-list, go on
                log.exception("node watch failed unexpectedly; re-listing")
                rv = None
            # A watch that ends (or fails) at once is retried after a backoff, 0.1 s doubling
            # to 5 s; one that ran for a while is renewed at once.
            if time.monotonic() - started < 1.0:
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1

    def _handle(
        self,
        kind: Any,
        node: dict[str, Any],
        on_put: Callable[[str, Lease], None],
        on_delete: Callable[[str], None],
    ) -> None:
        name = node_name(node)
        if not name:
            return
        if kind == "DELETED":
            self._views.pop(name, None)
            on_delete(name)
            return
        view = self.names.peer_view(node)
        if self._views.get(name) == view:
            return  # a heartbeat or another change peers do not care about
        self._views[name] = view
        try:
            lease = self._lease_of(node)
        except LeaseFormatError:
            return  # keep the peer's last good state
        if lease is None:
            on_delete(name)  # no longer managed by flannel (or lost its podCIDR)
        else:
            on_put(name, lease)
