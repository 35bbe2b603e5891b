"""Tests of the Kubernetes API emulator (tests/kubeapi.py), only through the official client.

Every assertion here is about what `kubernetes.client.CoreV1Api` and `kubernetes.watch.Watch` see,
so that code tested against the emulator meets the same behaviour from a real API server.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, informer, watch
from kubernetes.client.exceptions import ApiException

from tests.kubeapi import ADMIN_TOKEN, FLANNEL_RULES, MERGE_PATCH, ApiServer

pytestmark = pytest.mark.kube

# The watch, config and informer modules are not annotated: use them through Any.
Watch: Any = watch.Watch
load_kube_config: Any = config.load_kube_config
SharedInformer: Any = informer.SharedInformer

PREFIX = "flannel.alpha.coreos.com/"


@pytest.fixture
def server() -> Iterator[ApiServer]:
    with ApiServer() as s:
        yield s


@pytest.fixture
def v1(server: ApiServer) -> Any:
    return client.CoreV1Api(server.api_client())


def api_as(server: ApiServer, token: str) -> Any:
    return client.CoreV1Api(server.api_client(token))


def collect(w: Any, func: Any, count: int, **kwargs: Any) -> list[dict[str, Any]]:
    """The first `count` events of a watch (the stream is stopped after them)."""
    events: list[dict[str, Any]] = []
    kwargs.setdefault("timeout_seconds", 5)
    for event in w.stream(func, **kwargs):
        events.append(event)
        if len(events) >= count:
            w.stop()
    return events


def later(delay: float, fn: Callable[[], object]) -> threading.Timer:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()
    return timer


def body_of(err: ApiException) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(err.body)
    return data


def rv_of(obj: Any) -> int:
    return int(obj.metadata.resource_version)


def names(node_list: Any) -> list[str]:
    return [n.metadata.name for n in node_list.items]


def when_watching(server: ApiServer, action: Callable[[], object]) -> threading.Timer:
    """Run `action` in the background as soon as a watch stream is open."""

    def run() -> None:
        if server.wait_for_watches(1):
            action()

    return later(0, run)


# --- list ---------------------------------------------------------------------------------------


def test_list_resource_version_increases_per_change(server: ApiServer, v1: Any) -> None:
    first = rv_of(v1.list_node())
    server.add_node("a", pod_cidrs=["10.244.1.0/24"])
    after_add = v1.list_node()
    assert rv_of(after_add) == first + 1
    assert [n.metadata.name for n in after_add.items] == ["a"]
    assert rv_of(after_add.items[0]) == first + 1
    assert after_add.items[0].spec.pod_cidr == "10.244.1.0/24"
    server.update_node("a", lambda n: n["metadata"].setdefault("annotations", {}).update(k="v"))
    after_update = v1.list_node()
    assert rv_of(after_update) == first + 2
    assert after_update.items[0].metadata.annotations == {"k": "v"}


def test_list_raw_json_has_the_real_shape(server: ApiServer, v1: Any) -> None:
    server.add_node("a")  # no annotations, no podCIDR: those fields are omitted
    resp = v1.list_node(_preload_content=False)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    data = json.loads(resp.data)
    assert data["kind"] == "NodeList" and data["apiVersion"] == "v1"
    assert data["metadata"] == {"resourceVersion": str(server.revision)}
    (item,) = data["items"]
    assert "kind" not in item  # list items carry no kind/apiVersion
    assert "annotations" not in item["metadata"] and item["spec"] == {}
    assert isinstance(item["metadata"]["resourceVersion"], str)
    assert item["status"]["conditions"][0]["type"] == "Ready"


def test_list_selectors(server: ApiServer, v1: Any) -> None:
    server.add_node("a", labels={"role": "edge"})
    server.add_node("b", labels={"role": "core"})
    server.add_node("c")
    assert names(v1.list_node(label_selector="role=edge")) == ["a"]
    assert names(v1.list_node(label_selector="role!=edge")) == ["b", "c"]
    assert names(v1.list_node(label_selector="role in (edge,core)")) == ["a", "b"]
    assert names(v1.list_node(label_selector="!role")) == ["c"]
    assert names(v1.list_node(field_selector="metadata.name=b")) == ["b"]
    with pytest.raises(ApiException) as err:
        v1.list_node(field_selector="spec.unschedulable=true")
    assert err.value.status == 400


def test_paging_with_limit_and_continue_is_a_consistent_snapshot(
    server: ApiServer, v1: Any
) -> None:
    for name in ("n1", "n2", "n3", "n4", "n5"):
        server.add_node(name)
    page1 = v1.list_node(limit=2)
    assert [n.metadata.name for n in page1.items] == ["n1", "n2"]
    assert page1.metadata.remaining_item_count == 3
    token = page1.metadata._continue
    assert token
    server.add_node("n0")  # changes after the first page are not seen by the next pages
    server.delete_node("n4")
    page2 = v1.list_node(limit=2, _continue=token)
    assert [n.metadata.name for n in page2.items] == ["n3", "n4"]
    assert page2.metadata.resource_version == page1.metadata.resource_version
    page3 = v1.list_node(limit=2, _continue=page2.metadata._continue)
    assert [n.metadata.name for n in page3.items] == ["n5"]
    assert not page3.metadata._continue
    server.expire_history()
    with pytest.raises(ApiException) as err:
        v1.list_node(limit=2, _continue=page2.metadata._continue)
    assert err.value.status == 410
    assert body_of(err.value)["reason"] == "Expired"


# --- watch --------------------------------------------------------------------------------------


def test_watch_from_list_rv_sees_changes_in_order(server: ApiServer, v1: Any) -> None:
    server.add_node("a")
    rv = v1.list_node().metadata.resource_version
    server.add_node("b")
    server.update_node("a", lambda n: n["spec"].update(podCIDR="10.0.0.0/24"))
    server.delete_node("b")
    w = Watch()
    events = collect(w, v1.list_node, 3, resource_version=rv)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    rvs = [rv_of(e["object"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    assert rvs[-1] == server.revision  # a DELETED object carries the deletion's revision
    assert w.resource_version == str(server.revision)
    assert events[1]["object"].spec.pod_cidr == "10.0.0.0/24"
    watch_req = [r for r in server.requests if r.verb == "watch"][-1]
    assert watch_req.query["watch"] == "true" and watch_req.query["resourceVersion"] == rv


def test_watch_rv_zero_starts_with_current_objects_then_live(server: ApiServer, v1: Any) -> None:
    server.add_node("a")
    server.add_node("b")

    when_watching(server, lambda: server.add_node("c"))
    events = collect(Watch(), v1.list_node, 3, resource_version="0")
    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("ADDED", "c"),
    ]


def test_watch_with_label_selector_sees_objects_enter_and_leave(server: ApiServer, v1: Any) -> None:
    server.add_node("a")
    rv = v1.list_node().metadata.resource_version

    def set_role(value: str | None) -> Callable[[dict[str, Any]], None]:
        def fn(node: dict[str, Any]) -> None:
            labels = node["metadata"]["labels"]
            if value is None:
                labels.pop("role", None)
            else:
                labels["role"] = value

        return fn

    server.update_node("a", set_role("edge"))
    server.update_node("a", set_role("edge2"))
    server.update_node("a", set_role(None))
    events = collect(Watch(), v1.list_node, 3, resource_version=rv, label_selector="role")
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    events = collect(Watch(), v1.list_node, 2, resource_version=rv, label_selector="role=edge2")
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]
    assert events[1]["object"].metadata.labels["role"] == "edge2"  # the last state it matched
    assert rv_of(events[1]["object"]) == server.revision


def test_bookmark_is_a_raw_dict_and_advances_resource_version(v1: Any, server: ApiServer) -> None:
    rv = v1.list_node().metadata.resource_version
    server.add_pod("kube-flannel", "p", "a")  # another resource: the global revision moves on
    when_watching(server, server.trigger_bookmarks)
    w = Watch()
    (event,) = collect(w, v1.list_node, 1, resource_version=rv, allow_watch_bookmarks=True)
    assert event["type"] == "BOOKMARK"
    assert isinstance(event["object"], dict)
    assert event["object"] == {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(server.revision)},
    }
    assert w.resource_version == str(server.revision) != rv


def test_bookmarks_are_periodic_when_allowed() -> None:
    with ApiServer(bookmark_interval=0.05) as server:
        v1 = api_as(server, ADMIN_TOKEN)
        rv = v1.list_node().metadata.resource_version
        events = collect(Watch(), v1.list_node, 2, resource_version=rv, allow_watch_bookmarks=True)
        assert [e["type"] for e in events] == ["BOOKMARK", "BOOKMARK"]


def test_expired_resource_version_gives_410_error_event() -> None:
    with ApiServer(history_size=3) as server:
        v1 = api_as(server, ADMIN_TOKEN)
        rv = v1.list_node().metadata.resource_version
        for name in ("a", "b", "c", "d"):
            server.add_node(name)
        resp = v1.list_node(watch=True, resource_version=rv, _preload_content=False)
        assert resp.status == 200  # the error comes inside the stream
        (line,) = resp.data.decode().splitlines()
        event = json.loads(line)
        assert event["type"] == "ERROR"
        assert event["object"] == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {rv} ({int(rv) + 1})",
            "reason": "Expired",
            "code": 410,
        }
        with pytest.raises(ApiException) as err:
            collect(Watch(), v1.list_node, 1, resource_version=rv)
        assert err.value.status == 410
        assert "Expired: too old resource version" in str(err.value.reason)
        # The history still holds the last three changes: watching from there works.
        events = collect(Watch(), v1.list_node, 2, resource_version=str(int(rv) + 2))
        assert [e["object"].metadata.name for e in events] == ["c", "d"]


def test_expire_history_forces_a_relist(server: ApiServer, v1: Any) -> None:
    rv = v1.list_node().metadata.resource_version
    server.expire_history()
    server.clear_requests()
    started = time.monotonic()
    with pytest.raises(ApiException) as err:
        for _ in Watch().stream(v1.list_node, resource_version=rv):  # no timeout: retries once
            pass
    assert err.value.status == 410
    assert time.monotonic() - started < 1
    assert [(r.verb, r.query["resourceVersion"]) for r in server.requests] == [("watch", rv)] * 2
    fresh = v1.list_node().metadata.resource_version
    assert int(fresh) > int(rv)
    when_watching(server, lambda: server.add_node("x"))
    (event,) = collect(Watch(), v1.list_node, 1, resource_version=fresh)
    assert event["type"] == "ADDED"


def test_open_watch_survives_expire_history(server: ApiServer, v1: Any) -> None:
    rv = v1.list_node().metadata.resource_version

    def expire_then_add() -> None:
        server.expire_history()
        server.add_node("a")

    when_watching(server, expire_then_add)
    (event,) = collect(Watch(), v1.list_node, 1, resource_version=rv)
    assert (event["type"], event["object"].metadata.name) == ("ADDED", "a")


def test_timeout_seconds_ends_the_stream_cleanly(server: ApiServer, v1: Any) -> None:
    rv = v1.list_node().metadata.resource_version
    started = time.monotonic()
    events = list(Watch().stream(v1.list_node, resource_version=rv, timeout_seconds=1))
    elapsed = time.monotonic() - started
    assert events == []
    assert 0.9 < elapsed < 2.0
    assert server.watch_count == 0


def test_drop_watches_breaks_the_stream(server: ApiServer, v1: Any) -> None:
    rv = v1.list_node().metadata.resource_version
    dropped: list[int] = []
    dropper = when_watching(server, lambda: dropped.append(server.drop_watches()))
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for _ in Watch().stream(v1.list_node, resource_version=rv, timeout_seconds=10):
            pass
    dropper.join(2)
    assert dropped == [1]
    assert server.watch_count == 0


def test_stop_ends_watch_streams(v1: Any, server: ApiServer) -> None:
    rv = v1.list_node().metadata.resource_version
    when_watching(server, server.stop)
    events = list(Watch().stream(v1.list_node, resource_version=rv, timeout_seconds=10))
    assert events == []


def test_restart_keeps_state_and_port(server: ApiServer, v1: Any) -> None:
    server.add_node("a")
    url, revision = server.url, server.revision
    server.stop()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        v1.list_node(_request_timeout=1)
    server.start()
    assert server.url == url
    listed = v1.list_node()
    assert names(listed) == ["a"] and rv_of(listed) == revision


def test_closed_client_stream_is_noticed(server: ApiServer, v1: Any) -> None:
    rv = v1.list_node().metadata.resource_version
    resp = v1.list_node(watch=True, resource_version=rv, _preload_content=False)
    assert server.watch_count == 1
    resp.close()
    deadline = time.monotonic() + 2
    while server.watch_count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.watch_count == 0


def test_informer_relists_after_410(server: ApiServer, v1: Any) -> None:
    server.add_node("a")
    inf = SharedInformer(v1.list_node)
    synced = threading.Event()
    inf.add_event_handler("ADDED", lambda node: synced.set())
    inf.start()
    try:
        assert synced.wait(2) and server.wait_for_watches(1)
        server.expire_history()
        server.delete_node("a")  # happens while the informer is not watching
        server.drop_watches()
        server.add_node("b")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            if [n.metadata.name for n in inf.cache.list()] == ["b"]:
                break
            time.sleep(0.02)
        assert [n.metadata.name for n in inf.cache.list()] == ["b"]
    finally:
        inf.stop()


# --- get and patch ------------------------------------------------------------------------------


def test_get_node_and_pod(server: ApiServer, v1: Any) -> None:
    server.add_node("a", pod_cidrs=["10.244.0.0/24", "fd00::/64"], internal_ip="192.0.2.1")
    server.add_pod("kube-flannel", "flannel-x", "a")
    node = v1.read_node("a")
    assert node.spec.pod_cidrs == ["10.244.0.0/24", "fd00::/64"]
    assert node.status.addresses[0].address == "192.0.2.1"
    pod = v1.read_namespaced_pod("flannel-x", "kube-flannel")
    assert pod.spec.node_name == "a"
    with pytest.raises(ApiException) as err:
        v1.read_node("b")
    assert err.value.status == 404
    assert body_of(err.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'nodes "b" not found', "reason": "NotFound",
        "details": {"name": "b", "kind": "nodes"}, "code": 404,
    }  # fmt: skip
    with pytest.raises(ApiException) as err:
        v1.read_namespaced_pod("x", "kube-flannel")
    assert err.value.status == 404
    assert body_of(err.value)["message"] == 'pods "x" not found'


def test_patch_node_status_strategic_merge(server: ApiServer, v1: Any) -> None:
    server.add_node(
        "a", pod_cidrs=["10.244.0.0/24"], annotations={PREFIX + "old": "1", PREFIX + "keep": "2"}
    )
    rv = v1.list_node().metadata.resource_version
    patched = v1.patch_node_status(
        "a",
        {
            "metadata": {"annotations": {PREFIX + "old": None, PREFIX + "public-ip": "192.0.2.1"}},
            "spec": {"podCIDR": "10.99.0.0/24", "podCIDRs": ["10.99.0.0/24"]},
            "status": {
                "conditions": [
                    {"type": "NetworkUnavailable", "status": "True", "reason": "NoRouteCreated"}
                ]
            },
        },
    )
    assert patched.metadata.annotations == {PREFIX + "keep": "2", PREFIX + "public-ip": "192.0.2.1"}
    assert patched.spec.pod_cidr == "10.244.0.0/24"  # the status subresource ignores spec
    assert [c.type for c in patched.status.conditions] == ["Ready", "NetworkUnavailable"]
    assert rv_of(patched) == int(rv) + 1
    # The conditions list merges by type: the second patch updates NetworkUnavailable in place.
    v1.patch_node_status(
        "a",
        {"status": {"conditions": [
            {"type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
             "message": "Flannel is running on this node"}
        ]}},
    )  # fmt: skip
    stored = server.get_node("a")
    assert stored is not None
    conditions = {c["type"]: c for c in stored["status"]["conditions"]}
    assert len(stored["status"]["conditions"]) == 2
    assert conditions["Ready"]["status"] == "True"
    assert conditions["NetworkUnavailable"] == {
        "type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
        "message": "Flannel is running on this node",
    }  # fmt: skip
    request = server.requests[-1]
    assert (request.method, request.path) == ("PATCH", "/api/v1/nodes/a/status")
    assert request.content_type == "application/strategic-merge-patch+json"
    assert (request.verb, request.resource, request.status) == ("patch", "nodes/status", 200)
    events = collect(Watch(), v1.list_node, 2, resource_version=rv)
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED"]


def test_noop_patch_is_not_a_write(server: ApiServer, v1: Any) -> None:
    server.add_node("a", annotations={"k": "v"})
    before = server.revision
    v1.patch_node_status("a", {"metadata": {"annotations": {"k": "v"}}})
    assert server.revision == before


def test_patch_node_main_resource_changes_spec_not_status(server: ApiServer, v1: Any) -> None:
    server.add_node("a")
    taint = {"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}
    patched = v1.patch_node(
        "a",
        {
            "metadata": {"labels": {"role": "edge"}},
            "spec": {"taints": [taint]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
        },
    )
    assert patched.metadata.labels["role"] == "edge"
    assert patched.spec.taints[0].key == taint["key"]
    assert patched.status.conditions[0].status == "True"  # the main resource ignores status
    assert server.requests[-1].resource == "nodes"


def test_merge_patch_replaces_lists(server: ApiServer, v1: Any) -> None:
    server.add_node("a", annotations={"x": "1"})
    v1.patch_node_status(
        "a",
        {"metadata": {"annotations": {"x": None}},
         "status": {"conditions": [{"type": "NetworkUnavailable", "status": "False"}]}},
        _content_type=MERGE_PATCH,
    )  # fmt: skip
    stored = server.get_node("a")
    assert stored is not None
    assert "annotations" not in stored["metadata"]
    assert [c["type"] for c in stored["status"]["conditions"]] == ["NetworkUnavailable"]
    assert server.requests[-1].content_type == MERGE_PATCH


def test_json_patch_is_refused_with_415(server: ApiServer, v1: Any) -> None:
    server.add_node("a")
    with pytest.raises(ApiException) as err:
        v1.patch_node_status("a", [{"op": "add", "path": "/metadata/labels/x", "value": "y"}])
    assert err.value.status == 415
    assert server.requests[-1].content_type == "application/json-patch+json"


def test_patch_missing_node_404_and_stale_resource_version_409(server: ApiServer, v1: Any) -> None:
    with pytest.raises(ApiException) as err:
        v1.patch_node_status("nope", {"metadata": {"annotations": {"a": "b"}}})
    assert err.value.status == 404
    node = server.add_node("a")
    stale = node["metadata"]["resourceVersion"]
    server.update_node("a", lambda n: None)
    with pytest.raises(ApiException) as err:
        v1.patch_node_status("a", {"metadata": {"resourceVersion": stale, "labels": {"x": "y"}}})
    assert err.value.status == 409
    body = body_of(err.value)
    assert body["reason"] == "Conflict"
    assert body["message"].startswith('Operation cannot be fulfilled on nodes "a"')
    current = str(server.revision)
    patched = v1.patch_node_status("a", {"metadata": {"resourceVersion": current}, "status": {}})
    assert patched.metadata.resource_version == current  # nothing changed: no new revision


def test_non_string_annotation_is_refused(server: ApiServer, v1: Any) -> None:
    server.add_node("a")
    with pytest.raises(ApiException) as err:
        v1.patch_node_status("a", {"metadata": {"annotations": {"VNI": 1}}})
    assert err.value.status == 400


# --- auth, recording, faults --------------------------------------------------------------------


def test_unknown_token_401_and_missing_right_403(server: ApiServer) -> None:
    server.add_node("a")
    server.add_token("flannel", FLANNEL_RULES, user="system:serviceaccount:kube-flannel:flannel")
    with pytest.raises(ApiException) as err:
        api_as(server, "bogus").list_node()
    assert err.value.status == 401
    assert body_of(err.value)["reason"] == "Unauthorized"
    flannel = api_as(server, "flannel")
    assert [n.metadata.name for n in flannel.list_node().items] == ["a"]
    flannel.patch_node_status("a", {"metadata": {"annotations": {"k": "v"}}})
    with pytest.raises(ApiException) as err:
        flannel.patch_node("a", {"metadata": {"annotations": {"k": "w"}}})
    assert err.value.status == 403
    body = body_of(err.value)
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'nodes "a" is forbidden: User "system:serviceaccount:kube-flannel:flannel" cannot patch '
        'resource "nodes" in API group "" at the cluster scope'
    )
    server.add_token("reader", [("get", "nodes")])
    with pytest.raises(ApiException) as err:
        api_as(server, "reader").patch_node_status("a", {"metadata": {}})
    assert 'cannot patch resource "nodes/status"' in body_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        api_as(server, "reader").read_namespaced_pod("p", "kube-flannel")
    assert body_of(err.value)["message"].endswith('in the namespace "kube-flannel"')


def test_recorded_calls_match_rbac_rules(server: ApiServer) -> None:
    server.add_node("a")
    server.add_pod("kube-flannel", "p", "a")
    server.add_token("flannel", FLANNEL_RULES)
    api = api_as(server, "flannel")
    rv = api.list_node().metadata.resource_version
    api.read_node("a")
    api.read_namespaced_pod("p", "kube-flannel")
    api.patch_node_status("a", {"metadata": {"annotations": {"k": "v"}}})
    collect(Watch(), api.list_node, 1, resource_version=rv)
    assert server.api_calls() == FLANNEL_RULES


def test_fail_next_injects_errors(server: ApiServer, v1: Any) -> None:
    server.add_node("a")
    server.fail_next(503, 2, path="/api/v1/nodes", verb="list")
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            v1.list_node()
        assert err.value.status == 503
        assert body_of(err.value)["reason"] == "ServiceUnavailable"
    assert [n.metadata.name for n in v1.list_node().items] == ["a"]
    server.fail_next(429, method="PATCH", retry_after=1)
    with pytest.raises(ApiException) as err:
        v1.patch_node_status("a", {"metadata": {"annotations": {"k": "v"}}})
    assert err.value.status == 429
    assert err.value.headers["Retry-After"] == "1"
    assert body_of(err.value)["reason"] == "TooManyRequests"
    assert [r.status for r in server.requests] == [503, 503, 200, 429]


def test_retry_after_on_a_get_is_retried_by_urllib3(server: ApiServer, v1: Any) -> None:
    # Worth knowing: urllib3's default Retry repeats a GET answered 429/503 with Retry-After.
    server.add_node("a")
    server.fail_next(429, path="/api/v1/nodes/a", retry_after=0)
    assert v1.read_node("a").metadata.name == "a"
    assert [r.status for r in server.requests] == [429, 200]


def test_kubeconfig_and_api_client(server: ApiServer, tmp_path: Path) -> None:
    server.add_node("a")
    path = server.write_kubeconfig(tmp_path / "kubeconfig", ADMIN_TOKEN)
    cfg = client.Configuration()
    load_kube_config(config_file=str(path), client_configuration=cfg)
    api = client.CoreV1Api(client.ApiClient(cfg))
    assert [n.metadata.name for n in api.list_node().items] == ["a"]
    bad = server.write_kubeconfig(tmp_path / "bad", "nope")
    cfg = client.Configuration()
    load_kube_config(config_file=str(bad), client_configuration=cfg)
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(client.ApiClient(cfg)).list_node()
    assert err.value.status == 401
