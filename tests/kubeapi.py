"""An in-process Kubernetes API server emulator, for testing flanneld-py's kube subnet manager.

Why it exists: no kube-apiserver can be installed where flanneld-py is developed and tested, yet the
kube mode must be exercised through the official `kubernetes` client exactly as in production. This
module serves, on loopback, the few API calls flanneld makes (flannel-behaviour.md section 3), with
the wire behaviour of the real server for those calls, so that the client cannot tell the
difference:

* Nodes (cluster-scoped) and Pods (namespaced) stored as plain dicts in the JSON shape the real
  server returns; empty fields are omitted (`metadata.annotations` may be absent, `spec` be `{}`).
* One global resourceVersion counter (like the etcd revision): every write bumps it; list responses
  carry it in `metadata.resourceVersion`; objects carry the revision of their last write.
* list: `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`),
  `fieldSelector` (`metadata.name`, `metadata.namespace`; for pods also `spec.nodeName` and
  `status.phase`; with `=`, `==`, `!=`), `limit`/`continue` paging that serves a consistent snapshot
  at the first page's revision (410 Expired once that revision left the history), items sorted by
  key as etcd does, `remainingItemCount` when no selector is used.
* watch (`watch=true|1`): a chunked stream of newline-delimited JSON events, every change after the
  given resourceVersion in order then live changes; resourceVersion "" or "0" (or
  `sendInitialEvents=true`) starts with ADDED events for the current objects; selectors apply with
  the real server's transitions (an object leaving the selector is DELETED, entering is ADDED); the
  object of a DELETED event carries the deletion's revision. A resourceVersion older than the
  bounded history gets HTTP 200 and one ERROR event carrying a 410 Expired Status ("too old resource
  version: X (Y)"). BOOKMARK events (only kind, apiVersion and metadata.resourceVersion) are sent
  every `bookmark_interval` seconds when `allowWatchBookmarks=true`; `timeoutSeconds` ends the
  stream cleanly.
* get of a node, a node's status, a pod: the object, or 404 NotFound with a Status.
* patch of `nodes/{name}/status` and `nodes/{name}`: strategic merge patch (`null` deletes a key;
  `status.conditions` and `status.addresses` merge by `type`; `spec.podCIDRs` and
  `metadata.finalizers` merge as sets; `$patch: replace|delete`, `$deleteFromPrimitiveList/...`) or
  JSON merge patch. The status subresource never changes `spec`, the main resource never changes
  `status` (silently, as the real strategies do); system metadata (name, uid, creationTimestamp) is
  never changed. A `metadata.resourceVersion` in the patch is a precondition (409 Conflict). A patch
  that changes nothing is not a write: no new resourceVersion and no event, as on the real server.
* Bearer-token authentication (401 Unauthorized) and RBAC-like authorisation on (verb, resource)
  pairs such as ("patch", "nodes/status"), with the real server's 403 Forbidden message.
* Status objects for every error, `Content-Type: application/json`, HTTP/1.1 keep-alive.

Test hooks: direct writes (`add_node`, `update_node`, `delete_node`, `add_pod`, ...) that emit watch
events; `expire_history` (force 410 Gone), `drop_watches` (a connection loss), `trigger_bookmarks`,
`fail_next` (inject 429/500/503... for the next N matching requests), `stop`/`start` (a restart on
the same port, state kept) and `requests`, the record of every call (method, path, query, content
type, verb, resource, status) to check which API calls, and hence which RBAC rules, code needs.

Usage::

    with ApiServer() as server:
        server.add_node("n1", pod_cidrs=["10.244.1.0/24"])
        v1 = kubernetes.client.CoreV1Api(server.api_client())   # or server.write_kubeconfig(path)
        ...
        assert server.api_calls() <= FLANNEL_RULES

Two client behaviours worth knowing when writing tests: `Watch.stream` without `timeout_seconds`
reconnects by itself when a stream ends (and retries a 410 once); urllib3's default retry repeats a
GET (not a PATCH) answered 429/503 with a Retry-After header, so such a fault is invisible to code.

Not honoured (not needed by flanneld): other resources and API groups, create/update/delete over
HTTP, JSON patch and server-side apply (answered 415, since flannel never sends them), anonymous
requests (401 rather than the anonymous user's 403), TLS, protobuf, `resourceVersionMatch`, watch
from a resourceVersion in the future (served as if current), `fieldValidation`, `dryRun`,
`managedFields`, namespaces as objects, and admission/validation beyond the type of labels and
annotations.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import json
import logging
import math
import select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

JSON = dict[str, Any]
Rule = tuple[str, str]
"""An allowed (verb, resource) pair, e.g. ("patch", "nodes/status"); "*" matches anything."""

ADMIN_TOKEN: Final = "admin-token"
"""The token every `ApiServer` accepts, with every right (user "kubernetes-admin")."""

ALL_RULES: Final[frozenset[Rule]] = frozenset({("*", "*")})
FLANNEL_RULES: Final[frozenset[Rule]] = frozenset(
    {("get", "pods"), ("get", "nodes"), ("list", "nodes"), ("watch", "nodes"),
     ("patch", "nodes/status")}
)  # fmt: skip
"""The rights of flannel's ClusterRole in kube-flannel.yml (flannel-behaviour.md section 3.6)."""

STRATEGIC_MERGE: Final = "application/strategic-merge-patch+json"
MERGE_PATCH: Final = "application/merge-patch+json"

log = logging.getLogger(__name__)

_POLL: Final = 0.2  # seconds between checks that a watching client is still connected
_SEP: Final = (",", ":")  # compact JSON, as the real server writes it


@dataclass(frozen=True)
class _Kind:
    resource: str
    kind: str
    namespaced: bool
    fields: tuple[str, ...]  # field selector labels supported


_KINDS: Final[dict[str, _Kind]] = {
    "nodes": _Kind("nodes", "Node", False, ("metadata.name",)),
    "pods": _Kind(
        "pods",
        "Pod",
        True,
        ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"),
    ),
}

# Strategic merge: lists merged by a key, and primitive lists merged as sets (Go struct tags
# `patchStrategy:"merge"` of the core/v1 types); every other list is replaced.
_MERGE_KEYS: Final[dict[tuple[str, ...], str]] = {
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("metadata", "ownerReferences"): "uid",
    ("spec", "containers"): "name",
}
_SET_LISTS: Final[frozenset[tuple[str, ...]]] = frozenset(
    {("spec", "podCIDRs"), ("metadata", "finalizers")}
)

_REASONS: Final[dict[int, str]] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def now_rfc3339() -> str:
    """The current UTC time in the API's timestamp format, e.g. "2024-05-01T12:00:00Z"."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_object(code: int, message: str, reason: str = "", details: JSON | None = None) -> JSON:
    """A `Status` object as the real server returns with every error (reason from the code)."""
    out: JSON = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
    }
    if details:
        out["details"] = details
    out["code"] = code
    return out


class _ApiError(Exception):
    def __init__(
        self,
        code: int,
        message: str,
        reason: str = "",
        details: JSON | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.body = status_object(code, message, reason, details)
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it (see `ApiServer.requests`)."""

    method: str
    path: str
    query: dict[str, str]  # last value of each parameter
    content_type: str  # "" when the request had no Content-Type
    verb: str  # the RBAC verb (get, list, watch, patch, ...), "" for an unknown path
    resource: str  # the RBAC resource, with subresource (e.g. "nodes/status"), "" if unknown
    namespace: str
    name: str
    user: str  # "" when authentication failed (or a fault was injected before it)
    status: int  # HTTP status code sent (200 for every watch stream, even one carrying an ERROR)


@dataclass(frozen=True)
class _Route:
    verb: str
    kind: _Kind
    namespace: str
    name: str
    subresource: str

    @property
    def resource(self) -> str:
        return (
            f"{self.kind.resource}/{self.subresource}" if self.subresource else self.kind.resource
        )


@dataclass(frozen=True)
class _Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED (store operations)
    resource: str
    key: tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
    obj: JSON  # the object after the write (for DELETED: last state, with the deletion's rv)
    old: JSON | None  # the object before the write


@dataclass
class _Fault:
    remaining: int
    status: int
    path: str | None
    method: str | None
    verb: str | None
    message: str
    retry_after: float | None


@dataclass(eq=False)
class _Watcher:
    resource: str
    drop: bool = False
    bookmark_due: bool = False


@dataclass(frozen=True)
class _Grant:
    user: str
    rules: frozenset[Rule]


# --- selectors ------------------------------------------------------------------------------------

Matcher = Callable[[JSON], bool]


def _split_top(text: str) -> list[str]:
    """Split a selector on commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


@dataclass(frozen=True)
class _Requirement:
    """One term of a label selector: `op` is "=", "!=", "in", "notin", "exists" or "!"."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!":
            return value is None
        if self.op in ("=", "in"):
            return value in self.values
        return value not in self.values  # "!=" and "notin" also match a missing label


def _parse_label_selector(selector: str) -> list[_Requirement]:
    out: list[_Requirement] = []
    for term in _split_top(selector):
        words = term.split(None, 2)
        if len(words) == 3 and words[1] in ("in", "notin"):
            rest = words[2].strip()
            if not (rest.startswith("(") and rest.endswith(")")):
                raise _ApiError(400, f"unable to parse requirement: {term}")
            values = frozenset(v.strip() for v in rest[1:-1].split(",") if v.strip())
            out.append(_Requirement(words[0], words[1], values))
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            out.append(_Requirement(key, "!=", frozenset({value})))
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=", 1).split("=", 1))
            out.append(_Requirement(key, "=", frozenset({value})))
        elif term.startswith("!"):
            out.append(_Requirement(term[1:].strip(), "!"))
        else:
            out.append(_Requirement(term, "exists"))
    return out


def _labels_of(obj: JSON) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, dict) else {}


def _field_value(obj: JSON, label: str) -> str:
    cur: Any = obj
    for part in label.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def _parse_field_selector(selector: str, kind: _Kind) -> list[tuple[str, str, bool]]:
    """(field label, value, negated) terms of a field selector."""
    out: list[tuple[str, str, bool]] = []
    for term in _split_top(selector):
        negate = "!=" in term
        sep = "!=" if negate else ("==" if "==" in term else "=")
        if sep not in term:
            raise _ApiError(400, f"invalid selector: '{selector}'; can't understand '{term}'")
        label, value = (s.strip() for s in term.split(sep, 1))
        if label not in kind.fields:
            raise _ApiError(400, f"field label not supported: {label}")
        out.append((label, value, negate))
    return out


@dataclass(frozen=True)
class _Selector:
    """What a list or watch request selects: label and field terms, and a namespace ("" = all)."""

    labels: tuple[_Requirement, ...]
    fields: tuple[tuple[str, str, bool], ...]
    namespace: str

    def __call__(self, obj: JSON) -> bool:
        if self.namespace and (obj.get("metadata") or {}).get("namespace") != self.namespace:
            return False
        labels = _labels_of(obj)
        if not all(r.matches(labels) for r in self.labels):
            return False
        return all((_field_value(obj, f) == v) != neg for f, v, neg in self.fields)


# --- patches --------------------------------------------------------------------------------------


def strategic_merge(target: JSON, patch: JSON, path: tuple[str, ...] = ()) -> JSON:
    """Apply a strategic merge patch to `target` (not modified); return the result.

    `path` is the position of `target` in the object (e.g. ("status",)); it selects how lists merge.
    """
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target)
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        sub = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get("$patch") == "delete":
                result.pop(key, None)
            else:
                cur = result.get(key)
                result[key] = strategic_merge(cur if isinstance(cur, dict) else {}, value, sub)
        elif isinstance(value, list) and sub in _MERGE_KEYS:
            cur = result.get(key)
            result[key] = _merge_by_key(cur if isinstance(cur, list) else [], value, sub)
        elif isinstance(value, list) and sub in _SET_LISTS:
            cur = result.get(key)
            merged = list(cur) if isinstance(cur, list) else []
            merged += [v for v in value if v not in merged]
            result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/") and isinstance(value, list):
            name = key.split("/", 1)[1]
            cur = result.get(name)
            if isinstance(cur, list):
                result[name] = [v for v in cur if v not in value]
        # $setElementOrder/... and $retainKeys are accepted and ignored (order and pruning only).
    return result


def _merge_by_key(current: list[Any], patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    key = _MERGE_KEYS[path]
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    out = [copy.deepcopy(i) for i in current]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise _ApiError(400, f"map: {item!r} does not contain declared merge key: {key}")
        index = next(
            (n for n, cur in enumerate(out) if isinstance(cur, dict) and cur.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del out[index]
        elif index is None:
            out.append(strategic_merge({}, item, path))
        else:
            out[index] = strategic_merge(out[index], item, path)
    return out


def json_merge(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch to `target` (not modified); return the result."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge(result.get(key), value)
    return result


# --- object builders ------------------------------------------------------------------------------


def make_node(
    name: str,
    pod_cidrs: Sequence[str] = (),
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    internal_ip: str | None = None,
    taints: Sequence[JSON] = (),
    conditions: Sequence[JSON] | None = None,
) -> JSON:
    """A Node in the real server's JSON shape (empty fields omitted), without resourceVersion.

    Labels default to the kubelet's hostname/os/arch labels (given `labels` are added to them);
    conditions default to a single Ready=True condition.
    """
    now = now_rfc3339()
    meta: JSON = {
        "name": name,
        "uid": str(uuid.uuid4()),
        "creationTimestamp": now,
        "labels": {
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            **(labels or {}),
        },
    }
    if annotations:
        meta["annotations"] = dict(annotations)
    spec: JSON = {}
    if pod_cidrs:
        spec["podCIDR"] = pod_cidrs[0]
        spec["podCIDRs"] = list(pod_cidrs)
    if taints:
        spec["taints"] = copy.deepcopy(list(taints))
    if conditions is None:
        conditions = [
            {"type": "Ready", "status": "True", "lastHeartbeatTime": now,
             "lastTransitionTime": now, "reason": "KubeletReady",
             "message": "kubelet is posting ready status"}
        ]  # fmt: skip
    addresses = [{"type": "InternalIP", "address": internal_ip}] if internal_ip else []
    addresses.append({"type": "Hostname", "address": name})
    status = {"conditions": copy.deepcopy(list(conditions)), "addresses": addresses}
    return {"kind": "Node", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": status}


def make_pod(
    namespace: str,
    name: str,
    node_name: str | None = None,
    labels: Mapping[str, str] | None = None,
    phase: str = "Running",
) -> JSON:
    """A Pod in the real server's JSON shape, without resourceVersion (no `spec.nodeName` when
    `node_name` is None, as for a pod not scheduled yet)."""
    meta: JSON = {
        "name": name,
        "namespace": namespace,
        "uid": str(uuid.uuid4()),
        "creationTimestamp": now_rfc3339(),
    }
    if labels:
        meta["labels"] = dict(labels)
    spec: JSON = {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]}
    if node_name:
        spec["nodeName"] = node_name
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": meta,
        "spec": spec,
        "status": {"phase": phase},
    }


# --- HTTP plumbing --------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], api: ApiServer) -> None:
        self.api = api
        if ":" in address[0]:  # an IPv6 host
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubeapi-emulator"
    disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms to every response

    def _api(self) -> ApiServer:
        return cast(_HTTPServer, self.server).api

    def setup(self) -> None:
        super().setup()
        self._api()._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._api()._track(self.connection, False)

    def do_GET(self) -> None:
        self._api()._dispatch(self)

    do_PATCH = do_PUT = do_POST = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_json(self, code: int, body: JSON, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body, separators=_SEP).encode() + b"\n"
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_chunked(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _route(method: str, path: str, query: Mapping[str, str]) -> _Route | None:
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[:2] != ["api", "v1"]:
        return None
    rest, namespace = parts[2:], ""
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    if not rest or rest[0] not in _KINDS or len(rest) > 3:
        return None
    kind = _KINDS[rest[0]]
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if (namespace and not kind.namespaced) or (kind.namespaced and name and not namespace):
        return None
    if sub not in ("", "status") or (len(rest) > 1 and not name):
        return None
    if method == "GET":
        if name:
            verb = "get"
        else:
            verb = "watch" if query.get("watch", "").lower() in ("true", "1") else "list"
    else:
        verb = {"PATCH": "patch", "PUT": "update", "POST": "create"}.get(method, "")
        if method == "DELETE":
            verb = "delete" if name else "deletecollection"
    return _Route(verb, kind, namespace, name, sub)


def _strip_list_item(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=_SEP)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        return int(data["rv"]), str(data["start"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise _ApiError(400, "continue key is not valid: incorrect encoded start resourceVersion "
                        "(version meta.k8s.io/v1)") from None  # fmt: skip


def _key_string(key: tuple[str, str]) -> str:
    return f"{key[0]}/{key[1]}" if key[0] else key[1]


# --- the server -----------------------------------------------------------------------------------


class ApiServer:
    """A Kubernetes API server emulator on `host:port` (port 0: any free port); see the module
    docstring for what it honours.

    `tokens` maps extra bearer tokens to their allowed (verb, resource) rules (the user name is the
    token; use `add_token` to choose one); `ADMIN_TOKEN` is always accepted with every right.
    `history_size` is the number of events kept for watches (older resourceVersions get 410 Gone);
    `bookmark_interval` the seconds between BOOKMARK events (when a watch asks for them);
    `default_watch_timeout` the seconds a watch without `timeoutSeconds` lasts.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Mapping[str, Iterable[Rule]] | None = None,
        history_size: int = 1000,
        bookmark_interval: float = 60.0,
        default_watch_timeout: float = 1800.0,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.host = host
        self.port = port
        self.history_size = history_size
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.requests: list[RecordedRequest] = []
        """Every request served, in order (appended before the response is sent)."""
        self._cond = threading.Condition()
        self._grants: dict[str, _Grant] = {ADMIN_TOKEN: _Grant("kubernetes-admin", ALL_RULES)}
        for token, rules in (tokens or {}).items():
            self.add_token(token, rules)
        self._store: dict[str, dict[tuple[str, str], JSON]] = {r: {} for r in _KINDS}
        self._rv = 1
        self._compacted = 0  # new watches and continues from an rv below this get 410 Expired
        self._evicted = 0  # the newest event dropped from the bounded history
        self._history: deque[_Event] = deque()
        self._watchers: set[_Watcher] = set()
        self._faults: list[_Fault] = []
        self._connections: set[socket.socket] = set()
        self._stopping = False
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> ApiServer:
        """Start serving in a background thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("ApiServer already started")
        self._stopping = False
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"kubeapi:{self.port}", daemon=True,
        )  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        """End every watch stream cleanly, close all connections and stop serving."""
        httpd = self._httpd
        if httpd is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._watchers, timeout=2.0)
        httpd.shutdown()
        httpd.server_close()
        with self._cond:
            for conn in list(self._connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. "http://127.0.0.1:43123" (valid once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # --- client helpers -----------------------------------------------------------------------

    def write_kubeconfig(self, path: str | Path, token: str = ADMIN_TOKEN) -> Path:
        """Write a kubeconfig file for this server and bearer `token`; return its path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator-user", "user": {"token": token}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "emulator-user"}}
            ],
            "current-context": "emulator",
        }
        out = Path(path)
        out.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid YAML
        return out

    def api_client(self, token: str = ADMIN_TOKEN) -> ApiClient:
        """A `kubernetes.client.ApiClient` talking to this server with bearer `token`."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        cfg.api_key = {"authorization": token}
        cfg.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(cfg)

    # --- auth ---------------------------------------------------------------------------------

    def add_token(self, token: str, rules: Iterable[Rule], user: str | None = None) -> None:
        """Accept bearer `token` as `user` (default: the token itself) with the given rules,
        e.g. [("list", "nodes"), ("patch", "nodes/status")]; replaces an earlier grant."""
        with self._cond:
            self._grants[token] = _Grant(user or token, frozenset(rules))

    def remove_token(self, token: str) -> None:
        """Stop accepting `token` (requests with it get 401)."""
        with self._cond:
            self._grants.pop(token, None)

    # --- introspection ------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The current global resourceVersion."""
        with self._cond:
            return self._rv

    @property
    def watch_count(self) -> int:
        """The number of watch streams currently open."""
        with self._cond:
            return len(self._watchers)

    def wait_for_watches(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until at least `count` watch streams are open; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._watchers) >= count, timeout)

    def api_calls(self, successful_only: bool = True) -> set[Rule]:
        """The (verb, resource) pairs of the recorded requests (by default only those that got a
        2xx answer), to compare with RBAC rules."""
        with self._cond:
            return {
                (r.verb, r.resource)
                for r in self.requests
                if r.verb and (not successful_only or 200 <= r.status < 300)
            }

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        with self._cond:
            self.requests.clear()

    # --- test-side writes ---------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        pod_cidrs: Sequence[str] = (),
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        internal_ip: str | None = None,
        taints: Sequence[JSON] = (),
        conditions: Sequence[JSON] | None = None,
    ) -> JSON:
        """Create a Node (see `make_node`); returns a copy as stored. ValueError if it exists."""
        node = make_node(name, pod_cidrs, annotations, labels, internal_ip, taints, conditions)
        return self.create_object("nodes", node)

    def add_pod(
        self,
        namespace: str,
        name: str,
        node_name: str | None = None,
        labels: Mapping[str, str] | None = None,
        phase: str = "Running",
    ) -> JSON:
        """Create a Pod (see `make_pod`); returns a copy as stored. ValueError if it exists."""
        return self.create_object("pods", make_pod(namespace, name, node_name, labels, phase))

    def create_object(self, resource: str, obj: JSON) -> JSON:
        """Store a new object of `resource` ("nodes" or "pods") as given (uid and
        creationTimestamp are filled in when missing); emits ADDED. ValueError if it exists."""
        kind = _KINDS[resource]
        new = copy.deepcopy(obj)
        new.setdefault("kind", kind.kind)
        new.setdefault("apiVersion", "v1")
        meta = new.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        key = (meta.get("namespace", "") if kind.namespaced else "", meta["name"])
        with self._cond:
            if key in self._store[resource]:
                raise ValueError(f"{resource} {_key_string(key)!r} already exists")
            return copy.deepcopy(self._commit("ADDED", resource, key, new, None))

    def update_node(self, name: str, fn: Callable[[JSON], JSON | None]) -> JSON:
        """Rewrite Node `name`: `fn` gets a copy to change in place (or returns a replacement).
        Always a write (new resourceVersion, MODIFIED event); returns a copy as stored.
        KeyError if the node does not exist."""
        return self.update_object("nodes", "", name, fn)

    def update_pod(self, namespace: str, name: str, fn: Callable[[JSON], JSON | None]) -> JSON:
        """As `update_node`, for Pod `namespace/name`."""
        return self.update_object("pods", namespace, name, fn)

    def update_object(
        self, resource: str, namespace: str, name: str, fn: Callable[[JSON], JSON | None]
    ) -> JSON:
        """As `update_node`, for any stored resource."""
        key = (namespace, name)
        with self._cond:
            old = self._store[resource].get(key)
            if old is None:
                raise KeyError(f"{resource} {_key_string(key)!r} does not exist")
            new = copy.deepcopy(old)
            replaced = fn(new)
            if replaced is not None:
                new = replaced
            _keep_system_fields(old, new)
            return copy.deepcopy(self._commit("MODIFIED", resource, key, new, old))

    def delete_node(self, name: str) -> JSON:
        """Delete Node `name` (DELETED event); returns its last state. KeyError if absent."""
        return self.delete_object("nodes", "", name)

    def delete_pod(self, namespace: str, name: str) -> JSON:
        """Delete Pod `namespace/name` (DELETED event); returns its last state."""
        return self.delete_object("pods", namespace, name)

    def delete_object(self, resource: str, namespace: str, name: str) -> JSON:
        """Delete an object of any stored resource (DELETED event); returns its last state."""
        key = (namespace, name)
        with self._cond:
            old = self._store[resource].get(key)
            if old is None:
                raise KeyError(f"{resource} {_key_string(key)!r} does not exist")
            return copy.deepcopy(self._commit("DELETED", resource, key, copy.deepcopy(old), old))

    def get_node(self, name: str) -> JSON | None:
        """A copy of Node `name` as stored, or None."""
        return self.get_object("nodes", "", name)

    def get_object(self, resource: str, namespace: str, name: str) -> JSON | None:
        """A copy of a stored object, or None."""
        with self._cond:
            obj = self._store[resource].get((namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def nodes(self) -> list[JSON]:
        """Copies of all Nodes, sorted by name."""
        with self._cond:
            return [copy.deepcopy(o) for _, o in sorted(self._store["nodes"].items())]

    # --- fault hooks --------------------------------------------------------------------------

    def expire_history(self) -> None:
        """Forget the whole event history, as after an etcd compaction: every watch (and list
        continuation) from a resourceVersion older than now gets 410 Expired. The global revision
        is bumped (as writes to other resources do) so that even a client that has seen every
        change must re-list. Open watch streams are not affected; combine with `drop_watches`."""
        with self._cond:
            self._rv += 1
            self._compacted = self._rv

    def drop_watches(self, timeout: float = 2.0) -> int:
        """Break every open watch stream abruptly (the connection is shut down with no final
        chunk, as on a connection loss); returns how many were dropped. Waits until they are."""
        with self._cond:
            targets = list(self._watchers)
            for w in targets:
                w.drop = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: not any(w in self._watchers for w in targets), timeout)
            return len(targets)

    def trigger_bookmarks(self) -> None:
        """Make every open watch that allows bookmarks send a BOOKMARK event now."""
        with self._cond:
            for w in self._watchers:
                w.bookmark_due = True
            self._cond.notify_all()

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        path: str | None = None,
        method: str | None = None,
        verb: str | None = None,
        message: str = "",
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `count` requests matching `path` (exact, without query), `method` and
        RBAC `verb` (None = any) with HTTP `status` and a Status object, before authentication.
        `retry_after` adds a Retry-After header (seconds). Faults are consumed in the order added.
        """
        with self._cond:
            self._faults.append(
                _Fault(count, status, path, method, verb,
                       message or f"injected fault ({status})", retry_after)
            )  # fmt: skip

    # --- store internals ----------------------------------------------------------------------

    def _commit(
        self, type_: str, resource: str, key: tuple[str, str], new: JSON, old: JSON | None
    ) -> JSON:
        """Write under the lock: bump the revision, store, record the event, wake watchers."""
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        if type_ == "DELETED":
            self._store[resource].pop(key, None)
        else:
            self._store[resource][key] = new
        if len(self._history) >= self.history_size:
            self._evicted = self._history.popleft().rv
            self._compacted = max(self._compacted, self._evicted)
        self._history.append(_Event(self._rv, type_, resource, key, new, old))
        self._cond.notify_all()
        return new

    def _state_at(self, resource: str, rv: int) -> dict[tuple[str, str], JSON]:
        """The objects of `resource` as they were at revision `rv` (must be >= _compacted)."""
        state = dict(self._store[resource])
        for ev in reversed(self._history):
            if ev.rv <= rv:
                break
            if ev.resource != resource:
                continue
            if ev.type == "ADDED":
                state.pop(ev.key, None)
            elif ev.old is not None:
                state[ev.key] = ev.old
        return state

    def _events_after(self, rv: int, resource: str) -> list[_Event]:
        out: list[_Event] = []
        for ev in reversed(self._history):
            if ev.rv <= rv:
                break
            if ev.resource == resource:
                out.append(ev)
        out.reverse()
        return out

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # --- request handling ---------------------------------------------------------------------

    def _dispatch(self, h: _Handler) -> None:
        split = urlsplit(h.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length > 0 else b""
        ctype = h.headers.get("Content-Type", "")
        route = _route(h.command, path, query)
        user = ""

        def record(status: int) -> None:
            rec = RecordedRequest(
                h.command, path, query, ctype, route.verb if route else "",
                route.resource if route else "", route.namespace if route else "",
                route.name if route else "", user, status,
            )  # fmt: skip
            with self._cond:
                self.requests.append(rec)

        try:
            self._take_fault(h.command, path, route)
            user, rules = self._authenticate(h.headers.get("Authorization", ""))
            if route is None:
                raise _ApiError(404, "the server could not find the requested resource")
            self._authorize(user, rules, route)
            if route.verb == "watch":
                self._serve_watch(h, route, query, record)
                return
            code, out = self._serve(route, query, ctype, body)
            headers: dict[str, str] = {}
        except _ApiError as err:
            code, out, headers = err.code, err.body, err.headers
        except Exception as err:  # a bug in the emulator: answer 500 rather than drop the request
            log.exception("request %s %s failed", h.command, h.path)
            code, out, headers = 500, status_object(500, f"emulator error: {err!r}"), {}
        record(code)
        h.send_json(code, out, headers)

    def _take_fault(self, method: str, path: str, route: _Route | None) -> None:
        with self._cond:
            for fault in self._faults:
                if (
                    fault.remaining > 0
                    and fault.path in (None, path)
                    and fault.method in (None, method)
                    and fault.verb in (None, route.verb if route else "")
                ):
                    fault.remaining -= 1
                    self._faults = [f for f in self._faults if f.remaining > 0]
                    headers = {}
                    if fault.retry_after is not None:
                        headers["Retry-After"] = f"{fault.retry_after:g}"
                    raise _ApiError(fault.status, fault.message, headers=headers)

    def _authenticate(self, header: str) -> tuple[str, frozenset[Rule]]:
        scheme, _, token = header.partition(" ")
        with self._cond:
            grant = self._grants.get(token.strip()) if scheme.lower() == "bearer" else None
        if grant is None:
            raise _ApiError(401, "Unauthorized")
        return grant.user, grant.rules

    @staticmethod
    def _authorize(user: str, rules: frozenset[Rule], route: _Route) -> None:
        resource = route.resource
        for verb, res in rules:
            if verb in ("*", route.verb) and res in ("*", resource):
                return
        what = f'{route.kind.resource} "{route.name}"' if route.name else route.kind.resource
        scope = (
            f'in the namespace "{route.namespace}"' if route.namespace else "at the cluster scope"
        )
        message = (
            f'{what} is forbidden: User "{user}" cannot {route.verb} resource "{resource}" '
            f'in API group "" {scope}'
        )
        details: JSON = {"kind": route.kind.resource}
        if route.name:
            details = {"name": route.name, **details}
        raise _ApiError(403, message, details=details)

    def _serve(
        self, route: _Route, query: Mapping[str, str], ctype: str, body: bytes
    ) -> tuple[int, JSON]:
        if route.verb == "list":
            return 200, self._list(route, query)
        if route.verb == "get":
            return 200, self._get(route)
        if route.verb == "patch" and route.kind.resource == "nodes":
            return 200, self._patch(route, ctype, body)
        raise _ApiError(405, "the server does not allow this method on the requested resource")

    def _not_found(self, route: _Route) -> _ApiError:
        return _ApiError(
            404, f'{route.kind.resource} "{route.name}" not found',
            details={"name": route.name, "kind": route.kind.resource},
        )  # fmt: skip

    def _get(self, route: _Route) -> JSON:
        with self._cond:
            obj = self._store[route.kind.resource].get((route.namespace, route.name))
            if obj is None:
                raise self._not_found(route)
            return copy.deepcopy(obj)

    @staticmethod
    def _selector(route: _Route, query: Mapping[str, str]) -> _Selector:
        return _Selector(
            tuple(_parse_label_selector(query.get("labelSelector", ""))),
            tuple(_parse_field_selector(query.get("fieldSelector", ""), route.kind)),
            route.namespace if route.kind.namespaced else "",
        )

    def _list(self, route: _Route, query: Mapping[str, str]) -> JSON:
        match = self._selector(route, query)
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise _ApiError(400, f"invalid limit: {query.get('limit')!r}") from None
        token = query.get("continue", "")
        resource = route.kind.resource
        with self._cond:
            if token:
                rv, start = _decode_continue(token)
                if rv < self._compacted:
                    raise _ApiError(
                        410,
                        "The provided continue parameter is too old to display a consistent list "
                        "result. You can start a new list without the continue parameter, or use "
                        "the continue value from the response body.",
                    )
                state = self._state_at(resource, rv)
            else:
                rv, start, state = self._rv, "", self._store[resource]
            items = [
                (ks, obj)
                for ks, obj in sorted((_key_string(k), o) for k, o in state.items())
                if ks >= start and match(obj)
            ]
            page = items[:limit] if limit > 0 else items
            meta: JSON = {"resourceVersion": str(rv)}
            if limit > 0 and len(items) > limit:
                meta["continue"] = _encode_continue(rv, page[-1][0] + "\x00")
                if not query.get("labelSelector") and not query.get("fieldSelector"):
                    meta["remainingItemCount"] = len(items) - limit
            return {
                "kind": f"{route.kind.kind}List",
                "apiVersion": "v1",
                "metadata": meta,
                "items": [_strip_list_item(copy.deepcopy(o)) for _, o in page],
            }

    def _patch(self, route: _Route, ctype: str, body: bytes) -> JSON:
        media = ctype.split(";", 1)[0].strip().lower()
        if media not in (STRATEGIC_MERGE, MERGE_PATCH):
            raise _ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types "
                f"include: {STRATEGIC_MERGE}, {MERGE_PATCH}",
            )
        try:
            patch = json.loads(body or b"null")
        except ValueError as err:
            raise _ApiError(400, f"error decoding patch: {err}") from None
        if not isinstance(patch, dict):
            raise _ApiError(400, "patch body must be a JSON object")
        key = ("", route.name)
        with self._cond:
            old = self._store["nodes"].get(key)
            if old is None:
                raise self._not_found(route)
            meta = patch.get("metadata")
            want = meta.get("resourceVersion") if isinstance(meta, dict) else None
            if want not in (None, "") and str(want) != old["metadata"]["resourceVersion"]:
                raise _ApiError(
                    409,
                    f'Operation cannot be fulfilled on nodes "{route.name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    details={"name": route.name, "kind": "nodes"},
                )
            if media == STRATEGIC_MERGE:
                merged = strategic_merge(old, patch)
            else:
                merged = json_merge(old, patch)
            new = copy.deepcopy(merged)
            keep = "spec" if route.subresource == "status" else "status"
            if keep in old:
                new[keep] = copy.deepcopy(old[keep])
            else:
                new.pop(keep, None)
            _keep_system_fields(old, new)
            _check_string_map(new, "labels")
            _check_string_map(new, "annotations")
            if new == old:
                return copy.deepcopy(old)  # a no-op patch is not a write
            return copy.deepcopy(self._commit("MODIFIED", "nodes", key, new, old))

    def _serve_watch(
        self,
        h: _Handler,
        route: _Route,
        query: Mapping[str, str],
        record: Callable[[int], None],
    ) -> None:
        match = self._selector(route, query)
        try:
            timeout = float(query.get("timeoutSeconds") or 0) or self.default_watch_timeout
        except ValueError:
            raise _ApiError(400, f"invalid timeoutSeconds: {query['timeoutSeconds']!r}") from None
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        rv_text = query.get("resourceVersion", "")
        initial_events = query.get("sendInitialEvents", "").lower() in ("true", "1")
        resource = route.kind.resource
        watcher = _Watcher(resource)
        out: list[JSON] = []
        expired = False
        cursor = 0
        with self._cond:
            if rv_text not in ("", "0"):
                try:
                    cursor = int(rv_text)
                except ValueError:
                    raise _ApiError(400, f"invalid resource version: {rv_text!r}") from None
                if cursor < self._compacted:
                    expired = True
                    out.append(_expired_event(cursor, self._compacted))
            if not expired and (rv_text in ("", "0") or initial_events):
                cursor = self._rv
                for _, obj in sorted(self._store[resource].items()):
                    if match(obj):
                        out.append({"type": "ADDED", "object": copy.deepcopy(obj)})
                if initial_events and bookmarks:
                    out.append(_bookmark(route.kind, cursor, initial_end=True))
            if not expired:
                self._watchers.add(watcher)
                self._cond.notify_all()
        record(200)
        end = "clean"
        try:
            h.start_chunked()
            self._send_events(h, out)
            if expired:
                h.end_chunked()
                return
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + self.bookmark_interval if bookmarks else math.inf
            while True:
                out, end = [], ""
                with self._cond:
                    while True:
                        if watcher.drop:
                            end = "drop"
                            break
                        if self._stopping:
                            end = "clean"
                            break
                        if cursor < self._evicted:  # too slow: events were lost to the bound
                            out.append(_expired_event(cursor, self._evicted))
                            end = "clean"
                            break
                        for ev in self._events_after(cursor, resource):
                            translated = _translate(ev, match)
                            if translated is not None:
                                out.append(translated)
                        cursor = self._rv
                        now = time.monotonic()
                        if bookmarks and (watcher.bookmark_due or now >= next_bookmark):
                            out.append(_bookmark(route.kind, cursor))
                            watcher.bookmark_due = False
                            next_bookmark = now + self.bookmark_interval
                        if now >= deadline:
                            end = "clean"
                            break
                        if out:
                            break
                        if _client_gone(h.connection):
                            end = "gone"
                            break
                        self._cond.wait(min(deadline - now, next_bookmark - now, _POLL))
                self._send_events(h, out)
                if end:
                    break
            if end == "drop":
                h.close_connection = True
                with contextlib.suppress(OSError):
                    h.connection.shutdown(socket.SHUT_RDWR)
            elif end == "gone":
                h.close_connection = True
            else:
                self._unregister(watcher)  # before the client can see the end of the stream
                h.end_chunked()
        except OSError:  # the client went away while we wrote
            h.close_connection = True
        except Exception:  # a bug here: end the stream visibly rather than hang the client
            log.exception("watch stream failed")
            h.close_connection = True
        finally:
            self._unregister(watcher)

    def _unregister(self, watcher: _Watcher) -> None:
        with self._cond:
            self._watchers.discard(watcher)
            self._cond.notify_all()

    @staticmethod
    def _send_events(h: _Handler, events: list[JSON]) -> None:
        for event in events:
            h.send_chunk(json.dumps(event, separators=_SEP).encode() + b"\n")


def _keep_system_fields(old: JSON, new: JSON) -> None:
    """Restore what no write may change: kind, apiVersion, name, namespace, uid, timestamps."""
    new["kind"] = old["kind"]
    new["apiVersion"] = old["apiVersion"]
    meta = new.get("metadata")
    if not isinstance(meta, dict):
        meta = new["metadata"] = {}
    for name in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion"):
        if name in old["metadata"]:
            meta[name] = old["metadata"][name]
        else:
            meta.pop(name, None)
    for name in ("labels", "annotations"):
        if name in meta and not meta[name]:
            del meta[name]  # omitempty


def _check_string_map(obj: JSON, name: str) -> None:
    values = obj["metadata"].get(name)
    if values is None:
        return
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        raise _ApiError(
            400, f"json: cannot unmarshal metadata.{name}: values must be strings, got {values!r}"
        )


def _expired_event(rv: int, compacted: int) -> JSON:
    message = f"too old resource version: {rv} ({compacted})"
    return {"type": "ERROR", "object": status_object(410, message, "Expired")}


def _bookmark(kind: _Kind, rv: int, initial_end: bool = False) -> JSON:
    meta: JSON = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": "v1", "metadata": meta}}


def _translate(ev: _Event, match: Matcher) -> JSON | None:
    """The watch event a watcher with selector `match` sees for store event `ev`, if any."""
    new_ok = ev.type != "DELETED" and match(ev.obj)
    old_ok = ev.old is not None and match(ev.old)
    if ev.type == "ADDED":
        return {"type": "ADDED", "object": copy.deepcopy(ev.obj)} if new_ok else None
    if ev.type == "DELETED":
        return {"type": "DELETED", "object": copy.deepcopy(ev.obj)} if old_ok else None
    if new_ok:
        return {"type": "MODIFIED" if old_ok else "ADDED", "object": copy.deepcopy(ev.obj)}
    if old_ok and ev.old is not None:  # left the selector: DELETED, old state with the new rv
        gone = copy.deepcopy(ev.old)
        gone["metadata"]["resourceVersion"] = str(ev.rv)
        return {"type": "DELETED", "object": gone}
    return None


def _client_gone(conn: socket.socket) -> bool:
    """Whether the peer closed the connection (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


__all__ = [
    "ADMIN_TOKEN",
    "ALL_RULES",
    "FLANNEL_RULES",
    "MERGE_PATCH",
    "STRATEGIC_MERGE",
    "ApiServer",
    "RecordedRequest",
    "Rule",
    "json_merge",
    "make_node",
    "make_pod",
    "now_rfc3339",
    "status_object",
    "strategic_merge",
]
