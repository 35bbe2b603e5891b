"""Tests for the flannel CNI meta-plugin (flanneld_py.cni).

Rendering and parsing tests are pure. The end-to-end tests run the plugin as a process against a
fake ``bridge`` delegate in a temporary CNI_PATH; no root, no kernel changes.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flanneld_py.cni import (
    SUPPORTED_VERSIONS,
    CniError,
    ErrorCode,
    FlannelEnv,
    find_plugin,
    parse_subnet_env,
    read_subnet_env,
    render_delegate,
    run,
)

REPO = Path(__file__).resolve().parent.parent

V4_ENV = (
    "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\n"
    "FLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"
)
V6_ENV = (
    "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\n"
    "FLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"
)
DUAL_ENV = (
    "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\n"
    "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\n"
    "FLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"
)
PLAIN_NETCONF: dict[str, Any] = {"name": "cni-flannel", "type": "flannel"}


def render(netconf: dict[str, Any], subnet_env: str) -> dict[str, Any]:
    return render_delegate(netconf, parse_subnet_env(subnet_env))


# --- rendering: the cases flannel's own plugin pins -------------------------------------------


def test_kube_flannel_conflist_worked_example() -> None:
    netconf = {
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "type": "flannel",
        "delegate": {"hairpinMode": True, "isDefaultGateway": True},
    }
    subnet_env = (
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    assert render(netconf, subnet_env) == {
        "type": "bridge",
        "hairpinMode": True,
        "isDefaultGateway": True,
        "isGateway": True,
        "ipMasq": False,
        "mtu": 1450,
        "cniVersion": "0.3.1",
        "name": "cbr0",
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.244.1.0/24"}]],
            "routes": [{"dst": "10.244.0.0/16"}],
        },
    }


@pytest.mark.parametrize(
    ("subnet_env", "ranges", "routes"),
    [
        pytest.param(V4_ENV, [[{"subnet": "10.1.17.0/24"}]], [{"dst": "10.1.0.0/16"}], id="ipv4"),
        pytest.param(
            V4_ENV.replace("10.1.0.0/16", "10.1.0.0/16,192.168.0.0/16"),
            [[{"subnet": "10.1.17.0/24"}]],
            [{"dst": "10.1.0.0/16"}, {"dst": "192.168.0.0/16"}],
            id="ipv4-two-networks",
        ),
        pytest.param(V6_ENV, [[{"subnet": "fc00::/64"}]], [{"dst": "fc00::/48"}], id="ipv6"),
        pytest.param(
            DUAL_ENV,
            [[{"subnet": "10.1.17.0/24"}], [{"subnet": "fc00::/64"}]],
            [{"dst": "10.1.0.0/16"}, {"dst": "fc00::/48"}],
            id="dual-stack",
        ),
    ],
)
def test_families(subnet_env: str, ranges: list[Any], routes: list[Any]) -> None:
    # Same inputs and expectations as flannel-io/cni-plugin flannel_linux_test.go.
    assert render(PLAIN_NETCONF, subnet_env) == {
        "ipMasq": False,
        "ipam": {"routes": routes, "ranges": ranges, "type": "host-local"},
        "isGateway": True,
        "mtu": 1472,
        "name": "cni-flannel",
        "type": "bridge",
    }


def test_input_ipam_is_kept_and_complemented() -> None:
    netconf = {
        **PLAIN_NETCONF,
        "ipam": {
            "type": "my-ipam",
            "dataDir": "/var/lib/my-ipam",
            "unknown-param": "unknown-value",
            "ranges": [[{"subnet": "192.0.2.0/24"}]],
            "routes": [{"dst": "10.96.0.0/12"}, {"dst": "192.168.244.0/24", "gw": "10.1.17.20"}],
        },
    }
    assert render(netconf, DUAL_ENV)["ipam"] == {
        "type": "my-ipam",
        "dataDir": "/var/lib/my-ipam",
        "unknown-param": "unknown-value",
        "ranges": [[{"subnet": "10.1.17.0/24"}], [{"subnet": "fc00::/64"}]],
        "routes": [
            {"dst": "10.96.0.0/12"},
            {"dst": "192.168.244.0/24", "gw": "10.1.17.20"},
            {"dst": "10.1.0.0/16"},
            {"dst": "fc00::/48"},
        ],
    }


def test_ipam_without_type_defaults_to_host_local_and_keeps_data_dir() -> None:
    netconf = {**PLAIN_NETCONF, "ipam": {"dataDir": "/run/ipam"}}
    ipam = render(netconf, V4_ENV)["ipam"]
    assert ipam["type"] == "host-local"
    assert ipam["dataDir"] == "/run/ipam"


def test_delegate_values_win_over_subnet_env() -> None:
    netconf = {
        **PLAIN_NETCONF,
        "delegate": {"bridge": "mynet0", "mtu": 1400, "ipMasq": True, "isGateway": False},
    }
    delegate = render(netconf, V4_ENV)
    assert (delegate["mtu"], delegate["ipMasq"], delegate["isGateway"]) == (1400, True, False)
    assert delegate["bridge"] == "mynet0"


def test_ipmasq_false_in_subnet_env_means_delegate_masquerades() -> None:
    assert render(PLAIN_NETCONF, V4_ENV.replace("IPMASQ=true", "IPMASQ=false"))["ipMasq"] is True


def test_non_bridge_delegate_gets_no_is_gateway() -> None:
    netconf = {**PLAIN_NETCONF, "delegate": {"type": "ipvlan", "master": "eth0"}}
    delegate = render(netconf, V4_ENV)
    assert delegate["type"] == "ipvlan"
    assert "isGateway" not in delegate


def test_cni_version_and_runtime_config_are_passed_through() -> None:
    runtime_config = {"portMappings": [{"hostPort": 8080, "containerPort": 80}]}
    netconf = {
        **PLAIN_NETCONF,
        "cniVersion": "1.0.0",
        "runtimeConfig": runtime_config,
        "delegate": {"cniVersion": "0.3.1"},
    }
    delegate = render(netconf, V4_ENV)
    assert delegate["cniVersion"] == "1.0.0"  # flannel overwrites it, like name and ipam
    assert delegate["runtimeConfig"] == runtime_config
    assert "cniVersion" not in render(PLAIN_NETCONF, V4_ENV)


def test_top_level_keys_match_case_insensitively_like_go() -> None:
    netconf = {"Name": "n", "CNIVersion": "0.4.0", "Delegate": {"type": "bridge"}}
    delegate = render(netconf, V4_ENV)
    assert (delegate["name"], delegate["cniVersion"]) == ("n", "0.4.0")


def test_render_does_not_mutate_its_input() -> None:
    netconf = {**PLAIN_NETCONF, "delegate": {"hairpinMode": True}, "ipam": {"routes": []}}
    before = json.dumps(netconf, sort_keys=True)
    render(netconf, DUAL_ENV)
    assert json.dumps(netconf, sort_keys=True) == before


@pytest.mark.parametrize(
    ("netconf", "fragment"),
    [
        ({**PLAIN_NETCONF, "delegate": {"type": 1}}, "'delegate.type' must be a string"),
        ({**PLAIN_NETCONF, "delegate": {"name": "x"}}, "must not have 'name'"),
        ({**PLAIN_NETCONF, "delegate": {"ipam": {}}}, "must not have 'ipam'"),
        ({**PLAIN_NETCONF, "delegate": []}, "'delegate' must be a JSON object"),
        ({"type": "flannel"}, "'name' must be a non-empty string"),
        ({**PLAIN_NETCONF, "ipam": {"routes": {}}}, "'ipam.routes' must be a list"),
        ({**PLAIN_NETCONF, "ipam": {"routes": [{"gw": "10.0.0.1"}]}}, "'ipam.routes[0]'"),
    ],
)
def test_invalid_netconf(netconf: dict[str, Any], fragment: str) -> None:
    with pytest.raises(CniError) as info:
        render(netconf, V4_ENV)
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert fragment in info.value.msg


@given(
    st.lists(st.integers(min_value=0, max_value=255), min_size=1, max_size=4),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=68, max_value=9000),
    st.booleans(),
)
def test_property_routes_and_ranges(octets: list[int], node: int, mtu: int, masq: bool) -> None:
    networks = [f"10.{o}.0.0/16" for o in octets]
    subnet_env = (
        f"FLANNEL_NETWORK={','.join(networks)}\nFLANNEL_SUBNET=10.{octets[0]}.{node}.1/24\n"
        f"FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={'true' if masq else 'false'}\n"
    )
    delegate = render(PLAIN_NETCONF, subnet_env)
    assert delegate["ipam"]["routes"] == [{"dst": n} for n in dict.fromkeys(networks)]
    assert delegate["ipam"]["ranges"] == [[{"subnet": f"10.{octets[0]}.{node}.0/24"}]]
    assert (delegate["mtu"], delegate["ipMasq"]) == (mtu, not masq)


# --- subnet.env -------------------------------------------------------------------------------


def test_parse_documented_example() -> None:
    env = parse_subnet_env(
        "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\n"
        "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    assert env == FlannelEnv(
        mtu=1450,
        ipmasq=True,
        networks=(ipaddress.ip_network("10.42.0.0/16"),),
        subnet=ipaddress.ip_network("10.42.0.0/24"),
        ipv6_networks=(ipaddress.ip_network("2001:cafe:42::/56"),),
        ipv6_subnet=ipaddress.ip_network("2001:cafe:42::/64"),
    )


def test_parse_dedups_networks_ignores_noise_and_accepts_crlf() -> None:
    env = parse_subnet_env(
        "# comment\nOTHER=1\n\r\n"
        "FLANNEL_NETWORK=10.1.0.0/16,10.1.2.3/16,192.168.0.0/16\r\n"
        "FLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false"  # no final newline
    )
    assert env.networks == (
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("192.168.0.0/16"),
    )
    assert (env.mtu, env.ipmasq) == (1472, False)


def test_parse_last_line_of_a_key_wins() -> None:
    env = parse_subnet_env(V4_ENV + "FLANNEL_MTU=1400\n")
    assert env.mtu == 1400


@pytest.mark.parametrize("value", ['"true"', "True", "TRUE", "1", "", "true "])
def test_ipmasq_is_true_only_for_literal_true(value: str) -> None:
    env = parse_subnet_env(V4_ENV.replace("FLANNEL_IPMASQ=true", f"FLANNEL_IPMASQ={value}"))
    assert env.ipmasq is False


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("FLANNEL_MTU", "/x/subnet.env: FLANNEL_MTU is missing"),
        ("FLANNEL_IPMASQ", "/x/subnet.env: FLANNEL_IPMASQ is missing"),
        ("FLANNEL_NETWORK", "FLANNEL_NETWORK and FLANNEL_IPV6_NETWORK are both missing"),
        ("FLANNEL_SUBNET", "FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET are both missing"),
    ],
)
def test_missing_key(drop: str, message: str) -> None:
    text = "".join(line + "\n" for line in V4_ENV.splitlines() if not line.startswith(drop + "="))
    with pytest.raises(CniError) as info:
        parse_subnet_env(text, source="/x/subnet.env")
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert message in info.value.msg
    assert info.value.msg.startswith("/x/subnet.env: ")


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('FLANNEL_MTU="1450"', "FLANNEL_MTU"),
        ("FLANNEL_MTU= 1450", "FLANNEL_MTU"),
        ("FLANNEL_MTU=+1450", "FLANNEL_MTU"),
        ("FLANNEL_MTU=-1", "FLANNEL_MTU"),
        ("FLANNEL_MTU=4294967296", "FLANNEL_MTU"),
        ("FLANNEL_MTU=1_450", "FLANNEL_MTU"),
        ("FLANNEL_MTU", "FLANNEL_MTU"),
        ("FLANNEL_NETWORK=", "FLANNEL_NETWORK"),
        ("FLANNEL_NETWORK=10.1.0.0/16,", "FLANNEL_NETWORK"),
        ('FLANNEL_NETWORK="10.1.0.0/16"', "FLANNEL_NETWORK"),
        ("FLANNEL_NETWORK=10.1.0.0", "FLANNEL_NETWORK"),
        ("FLANNEL_NETWORK=10.1.0.0/255.255.0.0", "FLANNEL_NETWORK"),
        ("FLANNEL_SUBNET=10.1.17.1/33", "FLANNEL_SUBNET"),
        ("FLANNEL_IPV6_SUBNET=fe80::1%eth0/64", "FLANNEL_IPV6_SUBNET"),
    ],
)
def test_invalid_value(line: str, key: str) -> None:
    with pytest.raises(CniError) as info:
        parse_subnet_env(V4_ENV + line + "\n", source="/x/subnet.env")
    assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG
    assert info.value.msg.startswith(f"/x/subnet.env: {key} is invalid")


def test_read_missing_file_is_try_again_later(tmp_path: Path) -> None:
    path = str(tmp_path / "subnet.env")
    with pytest.raises(CniError) as info:
        read_subnet_env(path)
    assert info.value.code == ErrorCode.TRY_AGAIN_LATER
    assert info.value.msg.startswith(f"{path}: ")


def test_read_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text(V4_ENV.replace("FLANNEL_MTU=1472\n", ""))
    with pytest.raises(CniError, match=r"subnet\.env: FLANNEL_MTU is missing$") as info:
        read_subnet_env(str(path))
    assert info.value.msg == f"{path}: FLANNEL_MTU is missing"


# --- protocol handling without a delegate -----------------------------------------------------

BASE_ENV = {
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/var/run/netns/x",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/nonexistent",
}


def run_json(environ: dict[str, str], netconf: Any) -> tuple[dict[str, Any], int]:
    output = run(environ, json.dumps(netconf).encode())
    return json.loads(output.stdout), output.exit_code


def test_version() -> None:
    result, code = run_json({"CNI_COMMAND": "VERSION"}, {"cniVersion": "0.4.0"})
    assert code == 0
    assert result == {"cniVersion": "0.4.0", "supportedVersions": list(SUPPORTED_VERSIONS)}
    assert json.loads(run({"CNI_COMMAND": "VERSION"}, b"").stdout)["cniVersion"] == "1.0.0"


@pytest.mark.parametrize("command", ["", "add", "GC", "STATUS"])
def test_unknown_command(command: str) -> None:
    result, code = run_json({**BASE_ENV, "CNI_COMMAND": command}, PLAIN_NETCONF)
    assert (code, result["code"]) == (1, 4)
    assert "CNI_COMMAND" in result["msg"]
    assert set(result) == {"cniVersion", "code", "msg", "details"}


@pytest.mark.parametrize(
    ("environ", "stdin", "code"),
    [
        ({**BASE_ENV, "CNI_COMMAND": "ADD", "CNI_PATH": ""}, PLAIN_NETCONF, 4),
        ({**BASE_ENV, "CNI_COMMAND": "ADD", "CNI_NETNS": ""}, PLAIN_NETCONF, 4),
        ({**BASE_ENV, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "../etc"}, PLAIN_NETCONF, 4),
        ({**BASE_ENV, "CNI_COMMAND": "ADD"}, [1, 2], 6),
        ({**BASE_ENV, "CNI_COMMAND": "ADD"}, {**PLAIN_NETCONF, "cniVersion": "9.9.9"}, 1),
        ({**BASE_ENV, "CNI_COMMAND": "CHECK"}, {**PLAIN_NETCONF, "cniVersion": "0.3.1"}, 1),
        ({**BASE_ENV, "CNI_COMMAND": "CHECK"}, {**PLAIN_NETCONF, "cniVersion": "1.0.0"}, 3),
    ],
)
def test_protocol_errors(environ: dict[str, str], stdin: Any, code: int) -> None:
    result, exit_code = run_json(environ, stdin)
    assert (exit_code, result["code"]) == (1, code)


def test_not_json_is_decoding_failure() -> None:
    output = run({**BASE_ENV, "CNI_COMMAND": "ADD"}, b"{not json")
    assert (output.exit_code, json.loads(output.stdout)["code"]) == (1, 6)


def test_del_without_saved_config_succeeds_silently(tmp_path: Path) -> None:
    netconf = {**PLAIN_NETCONF, "dataDir": str(tmp_path)}
    output = run({**BASE_ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, json.dumps(netconf).encode())
    assert output == (b"", 0)


def test_find_plugin(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "bridge").write_text("not executable")
    make_executable(second / "bridge", "#!/bin/sh\n")
    cni_path = f"{first}::{second}"
    assert find_plugin("bridge", cni_path) == str(second / "bridge")
    for bad in ("../bridge", "missing", ""):
        with pytest.raises(CniError) as info:
            find_plugin(bad, cni_path)
        assert info.value.code == ErrorCode.INVALID_NETWORK_CONFIG


# --- end to end through a real process and a fake delegate ------------------------------------

FAKE_RESULT = '{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.244.1.2/24"}]}'


def make_executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Path]:
    """A CNI bin dir with the ``flannel`` wrapper and a fake ``bridge``, and a subnet.env."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    records = tmp_path / "records"
    records.mkdir()
    # The fake delegate records what it got; exits with $FAKE_EXIT (default 0).
    make_executable(
        bin_dir / "bridge",
        "#!/bin/sh\n"
        f'cat > "{records}/stdin.$CNI_COMMAND"\n'
        f'env > "{records}/env.$CNI_COMMAND"\n'
        f"printf '%s' '{FAKE_RESULT}'\n"
        'exit "${FAKE_EXIT:-0}"\n',
    )
    # Installed the way a node installs it: a wrapper named `flannel` in the CNI bin dir.
    make_executable(
        bin_dir / "flannel",
        f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m flanneld_py.cni "$@"\n',
    )
    subnet_env = tmp_path / "subnet.env"
    subnet_env.write_text(
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )
    return {
        "bin": bin_dir,
        "records": records,
        "subnet_env": subnet_env,
        "data_dir": tmp_path / "state" / "flannel",
    }


def plugin(
    node: dict[str, Path], command: str, netconf: dict[str, Any], **extra: str
) -> subprocess.CompletedProcess[bytes]:
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "abc123",
        "CNI_NETNS": "/var/run/netns/pod",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": f"/nonexistent:{node['bin']}",
        **extra,
    }
    return subprocess.run(
        [str(node["bin"] / "flannel")],
        input=json.dumps(netconf).encode(),
        env=environ,
        capture_output=True,
        timeout=60,
        check=False,
    )


def conf(node: dict[str, Path], **extra: Any) -> dict[str, Any]:
    return {
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "type": "flannel",
        "subnetFile": str(node["subnet_env"]),
        "dataDir": str(node["data_dir"]),
        "delegate": {"hairpinMode": True, "isDefaultGateway": True},
        **extra,
    }


def test_end_to_end_add_del(node: dict[str, Path]) -> None:
    saved = node["data_dir"] / "abc123"
    records = node["records"]

    add = plugin(node, "ADD", conf(node))
    assert (add.returncode, add.stdout.decode()) == (0, FAKE_RESULT), add.stderr
    delegate = json.loads(saved.read_bytes())
    assert delegate["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24"}]]
    assert (delegate["type"], delegate["mtu"], delegate["ipMasq"]) == ("bridge", 1450, False)
    assert (records / "stdin.ADD").read_bytes() == saved.read_bytes()
    env_seen = (records / "env.ADD").read_text().splitlines()
    assert {"CNI_COMMAND=ADD", "CNI_CONTAINERID=abc123", "CNI_IFNAME=eth0"} <= set(env_seen)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert stat.S_IMODE(saved.parent.stat().st_mode) == 0o700
    assert [p.name for p in saved.parent.iterdir()] == ["abc123"]  # no temp file left

    check = plugin(node, "CHECK", conf(node, cniVersion="1.0.0"))
    assert (check.returncode, check.stdout) == (0, b"")
    assert not (records / "stdin.CHECK").exists()  # as flannel: the delegate is not asked

    delete = plugin(node, "DEL", conf(node), CNI_NETNS="")
    assert (delete.returncode, delete.stdout.decode()) == (0, FAKE_RESULT)
    assert (records / "stdin.DEL").read_bytes() == (records / "stdin.ADD").read_bytes()
    assert not saved.exists()

    (records / "stdin.DEL").unlink()
    again = plugin(node, "DEL", conf(node))
    assert (again.returncode, again.stdout) == (0, b"")
    assert not (records / "stdin.DEL").exists()  # nothing left to undo: delegate not called


def test_end_to_end_failing_delegate_passes_through(node: dict[str, Path]) -> None:
    add = plugin(node, "ADD", conf(node), FAKE_EXIT="3")
    assert (add.returncode, add.stdout.decode()) == (3, FAKE_RESULT)
    failed_del = plugin(node, "DEL", conf(node), FAKE_EXIT="7")
    assert failed_del.returncode == 7
    assert (node["data_dir"] / "abc123").exists()  # kept so that DEL can be retried


def test_end_to_end_missing_subnet_env(node: dict[str, Path]) -> None:
    node["subnet_env"].unlink()
    add = plugin(node, "ADD", conf(node))
    assert add.returncode == 1
    result = json.loads(add.stdout)
    assert result["code"] == ErrorCode.TRY_AGAIN_LATER
    assert result["cniVersion"] == "0.3.1"
    assert str(node["subnet_env"]) in result["msg"]
    assert not (node["data_dir"] / "abc123").exists()


def test_end_to_end_unknown_delegate_saves_nothing(node: dict[str, Path]) -> None:
    add = plugin(node, "ADD", conf(node, delegate={"type": "macvlan"}))
    assert (add.returncode, json.loads(add.stdout)["code"]) == (1, 7)
    assert not (node["data_dir"] / "abc123").exists()
