"""Hostile input: every parser gives a value or its documented error, never another exception.

Issue 5 ("Hostile and malformed input"): property-based tests (hypothesis) of the parsers that see
data from outside the process — subnet.env (flanneld's own file, read back at start, and the CNI
plugin's input), the CNI plugin's environment and stdin, Kubernetes Node objects, etcd subnet keys
and lease values, the network config, and the command line with its FLANNELD_* variables.

Failing examples found while writing these are kept below as plain tests (each was a bug, now
fixed); where a property's domain still leaves out a class of input, the exclusion names the test
that pins that class.

Also here: fault 12 of issue 5 (subnet.env is never seen half-written by a concurrent reader),
which needs neither root nor a kernel.

Fast and without root: the CNI property runs the plugin in-process (`flanneld_py.cni.run`) with a
temporary CNI_PATH holding a fake `bridge` delegate, and every path it may write is temporary.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from backend.vxlan import VXLANConfig, parse_vxlan_config
from flanneld_py.cli import FLAGS, Options, parse_options
from flanneld_py.cni import SUPPORTED_VERSIONS, ErrorCode, Output, parse_subnet_env, run
from flanneld_py.flags import FlagError, HelpRequested, parse_flags
from subnet.annotations import AnnotationNames, node_to_lease
from subnet.config import ConfigError, NetworkConfig, check_network_config, parse_config
from subnet.lease import Lease, LeaseAttrs, LeaseFormatError, make_subnet_key, parse_subnet_key
from subnet.subnetenv import SubnetEnv, previous_cidr, read_env_file, write_subnet_env

FAST = settings(max_examples=300, deadline=None)
SHARED_DIR = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# --- shared strategies ---------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=24)
)
json_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_cidr_like = (
    st.builds("{}/{}".format, st.ip_addresses(v=4), st.sampled_from([0, 8, 16, 24, 30, 31, 32, 33]))
    | st.builds("{}/{}".format, st.ip_addresses(v=6), st.sampled_from([0, 48, 64, 127, 128, 129]))
    | st.sampled_from(["10.244.0.0/16", "10.244.1.1/24", "fd00::1/64", "10.0.0.0/0", "::/0"])
)


def v4_nets(min_prefix: int = 0, max_prefix: int = 32) -> st.SearchStrategy[ipaddress.IPv4Network]:
    return st.builds(lambda a, p: ipaddress.IPv4Network((a, p), strict=False),
                     st.integers(0, 2**32 - 1), st.integers(min_prefix, max_prefix))  # fmt: skip


def v6_nets() -> st.SearchStrategy[ipaddress.IPv6Network]:
    return st.builds(lambda a, p: ipaddress.IPv6Network((a, p), strict=False),
                     st.integers(0, 2**128 - 1), st.integers(0, 128))  # fmt: skip


_texty = _cidr_like | st.ip_addresses().map(str) | st.text(max_size=30)


# --- subnet.env, as flanneld reads it back at start -----------------------------------------------

_ENV_KEYS = ["FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET",
             "FLANNEL_MTU", "FLANNEL_IPMASQ"]  # fmt: skip
_env_values = (
    _cidr_like
    | st.lists(_cidr_like | st.text(max_size=8), min_size=1, max_size=3).map(",".join)
    | st.integers(-5, 2**33).map(str)
    | st.sampled_from(["true", "false", '"true"', "'1450'", ""])
    | st.text(max_size=20)
)
_env_lines = st.tuples(
    st.sampled_from(["", " ", "#", "export "]),
    st.sampled_from(_ENV_KEYS) | st.text(max_size=12),
    st.sampled_from(["=", " = ", "", "=="]),
    _env_values,
    st.sampled_from(["", "\r", " ", '"']),
).map("".join)
subnet_env_texts = st.lists(_env_lines, max_size=8).map("\n".join) | st.text(max_size=200)


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def check_previous_cidrs(values: dict[str, str]) -> None:
    for key in [*_ENV_KEYS, *values]:
        for version in (4, 6):
            net = previous_cidr(values, key, version)
            assert net is None or net.version == version


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the file properties overwrite their one file in."""
    return tmp_path_factory.mktemp("scratch")


@SHARED_DIR
@given(subnet_env_texts)
def test_read_env_file_and_previous_cidr_accept_any_text(scratch: Path, text: str) -> None:
    path = scratch / "subnet.env"
    path.write_bytes(utf8(text))
    values = read_env_file(str(path))
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())
    check_previous_cidrs(values)


@SHARED_DIR
@given(st.binary(max_size=200).filter(lambda b: _is_utf8(b)))
def test_read_env_file_accepts_any_utf8_bytes(scratch: Path, data: bytes) -> None:
    # Non-UTF-8 bytes are left out: see test_read_env_file_survives_non_utf8_bytes.
    path = scratch / "subnet.env"
    path.write_bytes(data)
    check_previous_cidrs(read_env_file(str(path)))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_read_env_file_survives_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_bytes(b"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\n\xff\xfe\n")
    values = read_env_file(str(path))
    assert previous_cidr(values, "FLANNEL_SUBNET", 4) == ipaddress.IPv4Network("10.244.7.0/24")


@SHARED_DIR
@given(
    v4_nets(8, 30),
    st.integers(68, 65535),
    st.booleans(),
)
def test_written_subnet_env_reads_back_as_the_same_subnet(
    scratch: Path, net: ipaddress.IPv4Network, mtu: int, ipmasq: bool
) -> None:
    path = str(scratch / "written.env")
    supernet = net.supernet(new_prefix=max(0, net.prefixlen - 8))
    write_subnet_env(path, SubnetEnv(supernet, net, None, None, mtu, ipmasq))
    values = read_env_file(path)
    assert previous_cidr(values, "FLANNEL_SUBNET", 4) == net
    assert previous_cidr(values, "FLANNEL_NETWORK", 4) == supernet
    assert values["FLANNEL_MTU"] == str(mtu)


# --- fault 12: subnet.env is never seen half-written ----------------------------------------------

ENV_A = SubnetEnv(
    ipaddress.IPv4Network("10.244.0.0/16"),
    ipaddress.IPv4Network("10.244.117.0/24"),
    ipaddress.IPv6Network("2001:db8:42::/56"),
    ipaddress.IPv6Network("2001:db8:42:17::/64"),
    8950,
    True,
)
ENV_B = SubnetEnv(
    ipaddress.IPv4Network("10.9.0.0/16"), ipaddress.IPv4Network("10.9.3.0/24"), None, None, 1450,
    False,
)  # fmt: skip
WRITES = 400
MIN_READS = 2000
MAX_READS = 200_000


def test_subnet_env_is_never_seen_half_written_during_rewrites(tmp_path: Path) -> None:
    path = tmp_path / "env" / "subnet.env"
    texts = {ENV_A.render(), ENV_B.render()}
    assert len(texts) == 2 and len(ENV_A.render()) != len(ENV_B.render())
    parsed = {parse_subnet_env(t) for t in texts}  # what the CNI plugin makes of each
    dicts = []  # what flanneld makes of each (read_env_file at start)
    for name, env in (("a", ENV_A), ("b", ENV_B)):
        write_subnet_env(str(tmp_path / name), env)
        dicts.append(read_env_file(str(tmp_path / name)))
    write_subnet_env(str(path), ENV_A)
    writing = threading.Event()
    writing.set()
    problems: list[str] = []
    reads: list[int] = []
    writes: list[int] = []

    def writer() -> None:
        try:
            for i in range(WRITES):
                write_subnet_env(str(path), ENV_B if i % 2 == 0 else ENV_A)
                writes.append(i)
        except BaseException as err:
            problems.append(f"writer: {err!r}")
        finally:
            writing.clear()

    def reader() -> None:
        n = 0
        while (writing.is_set() or n < MIN_READS) and n < MAX_READS and len(problems) < 5:
            n += 1
            try:
                text = path.read_text()
                values = read_env_file(str(path))
            except OSError as err:  # e.g. FileNotFoundError between an unlink and a create
                problems.append(f"read {n}: {err!r}")
                continue
            if text not in texts:
                problems.append(f"read {n}: torn content {text!r}")
            elif parse_subnet_env(text) not in parsed:
                problems.append(f"read {n}: the CNI plugin parsed something else from {text!r}")
            if values not in dicts:
                problems.append(f"read {n}: read_env_file gave {values!r}")
        reads.append(n)

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    assert problems == []
    assert len(writes) == WRITES and len(reads) == 2 and min(reads) >= MIN_READS
    assert sorted(p.name for p in path.parent.iterdir()) == ["subnet.env"]  # no temp file left
    assert path.read_text() == ENV_A.render()


# --- the CNI plugin -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CniDirs:
    """Temporary places for the plugin: the subnet.env it reads, its data directory, a CNI_PATH
    with a fake `bridge` delegate and one without any plugin."""

    subnet_file: Path
    data_dir: Path
    plugins: Path
    empty: Path


FAKE_RESULT = {"cniVersion": "0.3.1", "ips": [{"address": "10.244.1.2/24"}], "dns": {}}


@pytest.fixture(scope="module")
def cni_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CniDirs]:
    root = tmp_path_factory.mktemp("cni")
    plugins, empty = root / "plugins", root / "empty"
    plugins.mkdir()
    empty.mkdir()
    fake = plugins / "bridge"
    fake.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{json.dumps(FAKE_RESULT)}'\n")
    fake.chmod(0o755)
    yield CniDirs(root / "subnet.env", root / "data", plugins, empty)


_env_text = st.text(st.characters(blacklist_characters="\x00"), max_size=16)
_container_ids = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,24}", fullmatch=True) | _env_text
_hostile_environs = st.fixed_dictionaries(
    {"CNI_COMMAND": st.sampled_from(["ADD", "DEL", "CHECK", "VERSION"]) | _env_text},
    optional={
        "CNI_CONTAINERID": _container_ids,
        "CNI_NETNS": st.just("/run/netns/fpy-none") | _env_text,
        "CNI_IFNAME": st.just("eth0") | _env_text,
        "CNI_ARGS": _env_text,
    },
)
_kubelet_environs = st.fixed_dictionaries(
    {
        "CNI_COMMAND": st.sampled_from(["ADD", "DEL", "CHECK"]),
        "CNI_CONTAINERID": st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,24}", fullmatch=True),
        "CNI_NETNS": st.just("/run/netns/fpy-none"),
        "CNI_IFNAME": st.just("eth0"),
    },
    optional={"CNI_ARGS": _env_text},
)
cni_environs = _kubelet_environs | _hostile_environs
_delegates = (
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.just("bridge") | json_values,
            "hairpinMode": json_values,
            "isDefaultGateway": json_values,
            "name": json_values,
            "ipam": json_values,
            "mtu": json_values,
            "cniVersion": json_values,
        },
    )
    | json_values
)
_ipams = (
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.just("host-local") | json_values,
            "routes": st.lists(
                st.fixed_dictionaries({}, optional={"dst": _cidr_like | json_values}) | json_values,
                max_size=3,
            )
            | json_values,
            "ranges": json_values,
            "dataDir": json_values,
        },
    )
    | json_values
)
netconfs = st.fixed_dictionaries(
    {
        "type": st.just("flannel") | json_values,
        "cniVersion": st.sampled_from(SUPPORTED_VERSIONS) | json_values,
        "name": st.just("cbr0") | json_values,
    },
    optional={
        "delegate": _delegates,
        "ipam": _ipams,
        "runtimeConfig": json_values,
        "prevResult": json_values,
        "extra": json_values,
    },
)
VALID_SUBNET_ENV = (
    "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
)
ERROR_CODES = {int(c) for c in ErrorCode} - {int(ErrorCode.INTERNAL)}


def check_output(out: Output) -> None:
    """A CNI result or nothing: JSON on stdout (a delegate's result or an error result with a
    documented code, never INTERNAL), or empty stdout with status 0."""
    assert isinstance(out, Output)
    assert isinstance(out.stdout, bytes) and isinstance(out.exit_code, int)
    if not out.stdout:
        assert out.exit_code == 0
        return
    result = json.loads(out.stdout)
    assert isinstance(result, dict)
    if out.exit_code == 0:
        assert result == FAKE_RESULT or "supportedVersions" in result
    else:
        assert result.get("code") in ERROR_CODES, result
        assert isinstance(result.get("msg"), str) and result["msg"]


@SHARED_DIR
@given(
    cni_environs,
    st.sampled_from(["plugins", "plugins", "plugins", "empty", "missing", "unset"]),
    netconfs,
    st.sampled_from(["file", "file", "missing"]),
    st.just(VALID_SUBNET_ENV) | subnet_env_texts,
)
def test_cni_run_answers_any_environment_and_config(
    cni_dirs: CniDirs,
    environ: dict[str, str],
    cni_path: str,
    netconf: dict[str, Any],
    subnet_file: str,
    subnet_env: str,
) -> None:
    # subnet.env is valid UTF-8 here: see test_cni_add_with_a_non_utf8_subnet_env_value.
    env = dict(environ)
    paths = {"plugins": str(cni_dirs.plugins), "empty": str(cni_dirs.empty),
             "missing": str(cni_dirs.empty / "nope")}  # fmt: skip
    if cni_path in paths:
        env["CNI_PATH"] = paths[cni_path]
    cni_dirs.subnet_file.write_bytes(utf8(subnet_env))
    conf = {
        **netconf,
        "subnetFile": str(cni_dirs.subnet_file if subnet_file == "file" else cni_dirs.empty / "x"),
        "dataDir": str(cni_dirs.data_dir),
    }
    out = run(env, json.dumps(conf).encode())
    event(f"exit {out.exit_code} code {json.loads(out.stdout).get('code') if out.stdout else '-'}")
    check_output(out)


@SHARED_DIR
@given(cni_environs, st.binary(max_size=120) | st.text(max_size=80).map(utf8))
def test_cni_run_answers_any_stdin_bytes(
    cni_dirs: CniDirs, environ: dict[str, str], stdin: bytes
) -> None:
    with contextlib.suppress(ValueError):  # a JSON object would name flannel's default
        assume(not isinstance(json.loads(stdin), dict))  # files under /run and /var: not here
    check_output(run({**environ, "CNI_PATH": str(cni_dirs.empty)}, stdin))


ADD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/x",
           "CNI_IFNAME": "eth0"}  # fmt: skip


def test_cni_add_with_a_valid_config_runs_the_delegate(cni_dirs: CniDirs) -> None:
    # the property's "success" branch is reachable: a good ADD runs the fake delegate
    cni_dirs.subnet_file.write_text(VALID_SUBNET_ENV)
    conf = {"cniVersion": "0.3.1", "name": "cbr0", "type": "flannel",
            "subnetFile": str(cni_dirs.subnet_file), "dataDir": str(cni_dirs.data_dir)}  # fmt: skip
    out = run({**ADD_ENV, "CNI_PATH": str(cni_dirs.plugins)}, json.dumps(conf).encode())
    assert out == Output(json.dumps(FAKE_RESULT).encode() + b"\n", 0)
    check_output(out)


def test_cni_add_with_a_non_utf8_subnet_env_value(cni_dirs: CniDirs) -> None:
    cni_dirs.subnet_file.write_bytes(
        b"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
        b"FLANNEL_MTU=14\xff50\nFLANNEL_IPMASQ=true\n"
    )
    conf = {"cniVersion": "0.3.1", "name": "cbr0", "type": "flannel",
            "subnetFile": str(cni_dirs.subnet_file), "dataDir": str(cni_dirs.data_dir)}  # fmt: skip
    out = run({**ADD_ENV, "CNI_PATH": str(cni_dirs.plugins)}, json.dumps(conf).encode())
    assert json.loads(out.stdout)["code"] == ErrorCode.INVALID_NETWORK_CONFIG


@pytest.mark.parametrize("command", ["ADD", "VERSION"])
def test_cni_deeply_nested_stdin_is_a_decoding_failure(cni_dirs: CniDirs, command: str) -> None:
    out = run({**ADD_ENV, "CNI_COMMAND": command, "CNI_PATH": str(cni_dirs.empty)}, b"[" * 100_000)
    check_output(out)


def test_cni_version_with_a_lone_surrogate_cni_version(cni_dirs: CniDirs) -> None:
    out = run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "\\ud800"}')
    check_output(out)
    assert out.exit_code == 0


# --- Kubernetes Node objects ----------------------------------------------------------------------

NAMES = AnnotationNames.for_prefix()
CONFIGS = [
    check_network_config(parse_config(text))
    for text in (
        '{"Network": "10.244.0.0/16"}',
        '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "2001:db8:42::/56"}',
        '{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "2001:db8:42::/56"}',
    )
]
_ann_keys = st.sampled_from(
    [NAMES.subnet_manager, NAMES.backend_type, NAMES.backend_data, NAMES.backend_v6_data,
     NAMES.public_ip, NAMES.public_ipv6, NAMES.public_ip_overwrite, NAMES.node_public_ip]
) | st.text(max_size=12)  # fmt: skip
_ann_values = (
    st.sampled_from(["true", "false", "vxlan", "", "null", "{}", "[]", '{"VtepMAC": 1}'])
    | st.ip_addresses().map(str)
    | st.sampled_from(["fe80::1%eth0", "1.2.3.4%x", "01.2.3.4", " 1.2.3.4"])
    | json_values.map(json.dumps)
    | st.text(max_size=24)
)
_annotations = st.dictionaries(_ann_keys, _ann_values, max_size=7) | st.fixed_dictionaries(
    {NAMES.subnet_manager: st.just("true")},
    optional={NAMES.public_ip: _ann_values, NAMES.backend_data: _ann_values,
              NAMES.backend_type: st.just("vxlan") | _ann_values,
              NAMES.public_ipv6: _ann_values, NAMES.backend_v6_data: _ann_values},
)  # fmt: skip
_specs = (
    st.fixed_dictionaries(
        {},
        optional={
            "podCIDR": _cidr_like | json_values,
            "podCIDRs": st.lists(_cidr_like | json_values, max_size=3) | json_values,
        },
    )
    | json_values
)
nodes = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.fixed_dictionaries(
            {}, optional={"name": json_values, "annotations": _annotations | json_values}
        )
        | json_values,
        "spec": _specs,
        "status": json_values,
    },
) | st.dictionaries(st.text(max_size=10), json_values, max_size=4)


@FAST
@given(nodes, st.sampled_from(CONFIGS))
def test_node_to_lease_accepts_any_node_object(node: dict[str, Any], cfg: NetworkConfig) -> None:
    # Annotation values are strings here, as the API server sends them: see
    # test_node_with_a_non_string_annotation_is_a_lease_format_error.
    meta = node.get("metadata")
    ann = meta.get("annotations") if isinstance(meta, dict) else None
    assume(not isinstance(ann, dict) or all(isinstance(v, str) for v in ann.values()))
    try:
        lease = node_to_lease(node, NAMES, cfg)
    except LeaseFormatError as err:
        assert str(err)
        return
    if lease is not None:
        assert isinstance(lease, Lease)
        assert lease.subnet is not None or lease.ipv6_subnet is not None
        assert lease.subnet is None or 4 in cfg.families
        assert lease.ipv6_subnet is None or 6 in cfg.families
        assert lease.subnet is None or int(lease.attrs.public_ip) != 0


def test_node_with_a_non_string_annotation_is_a_lease_format_error() -> None:
    node = {
        "metadata": {"name": "n2", "annotations": {
            NAMES.subnet_manager: "true", NAMES.public_ip: "198.18.0.2",
            NAMES.backend_type: "vxlan", NAMES.backend_data: {"VNI": 1}}},
        "spec": {"podCIDR": "10.244.2.0/24"},
    }  # fmt: skip
    with pytest.raises(LeaseFormatError):
        node_to_lease(node, NAMES, CONFIGS[0])


# --- etcd subnet keys and lease values ------------------------------------------------------------

_key_like = st.from_regex(
    r"\A(/[a-z.]{0,8}){0,3}/?[0-9]{1,4}(\.[0-9]{1,4}){3}-[0-9]{1,3}(&[0-9a-fA-F:]{0,30}-[0-9]{1,4})?"
    r"\Z"
)
_key_from_nets = st.builds(
    lambda v4, v6, p: (
        p
        + (f"{v4.network_address}-{v4.prefixlen}" if v4 else "0.0.0.0-0")
        + (f"&{v6.network_address}-{v6.prefixlen}" if v6 else "")
    ),
    st.none() | v4_nets(),
    st.none() | v6_nets(),
    st.sampled_from(["", "/coreos.com/network/subnets/", "x"]),
)


@FAST
@given(_key_like | _key_from_nets | st.text(max_size=40))
def test_parse_subnet_key_gives_subnets_or_lease_format_error(key: str) -> None:
    try:
        v4, v6 = parse_subnet_key(key)
    except LeaseFormatError as err:
        assert str(err)
        return
    assert v4 is not None or v6 is not None
    assert v4 is None or (isinstance(v4, ipaddress.IPv4Network) and v4.prefixlen <= 31)
    assert v6 is None or (isinstance(v6, ipaddress.IPv6Network) and v6.prefixlen <= 127)
    assert parse_subnet_key(make_subnet_key(v4, v6)) == (v4, v6)


_lease_fields = st.sampled_from(
    ["PublicIP", "publicip", "PUBLICIP", "PublicIPv6", "BackendType", "backendtype",
     "BackendData", "BackendV6Data"]
) | st.text(max_size=8)  # fmt: skip
lease_objects = st.dictionaries(
    _lease_fields,
    _texty | json_values | st.fixed_dictionaries({"VNI": json_values, "VtepMAC": _texty}),
    max_size=6,
)


@FAST
@given(
    st.binary(max_size=80)
    | st.text(max_size=80)
    | lease_objects.map(json.dumps)
    | lease_objects.map(lambda o: json.dumps(o).encode())
)
def test_lease_value_decodes_or_raises_lease_format_error(value: bytes | str) -> None:
    try:
        attrs = LeaseAttrs.decode(value)
    except LeaseFormatError as err:
        assert str(err)
        return
    assert isinstance(attrs, LeaseAttrs)
    # what was accepted can be written back, and reads back the same (the wire contract)
    assert LeaseAttrs.decode(attrs.encode()) == attrs


def test_lease_value_with_an_out_of_range_number_is_rejected() -> None:
    with pytest.raises(LeaseFormatError):
        LeaseAttrs.decode(
            b'{"PublicIP":"198.18.0.2","BackendType":"vxlan",'
            b'"BackendData":{"VNI":1e400,"VtepMAC":"0e:00:00:00:00:02"}}'
        )


# --- the network config -----------------------------------------------------------------------

_CONFIG_KEYS = ["Network", "IPv6Network", "EnableIPv4", "EnableIPv6", "SubnetLen", "SubnetMin",
                "SubnetMax", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "Backend",
                "EnableNFTables"]  # fmt: skip
_backends = (
    st.fixed_dictionaries(
        {},
        optional={
            "Type": st.sampled_from(["vxlan", "host-gw", "udp", ""]) | json_values,
            "VNI": st.integers(-2, 2**25) | json_values,
            "Port": st.integers(-2, 70000) | json_values,
            "MTU": st.integers(-2, 70000) | json_values,
            "GBP": json_values,
            "Learning": json_values,
            "DirectRouting": json_values,
        },
    )
    | json_values
)
config_objects = st.dictionaries(
    st.sampled_from(_CONFIG_KEYS).map(lambda k: k.lower() if len(k) % 2 else k)
    | st.text(max_size=8),
    _texty | st.integers(-1, 140) | json_values | _backends,
    max_size=7,
)


@FAST
@given(st.text(max_size=80) | st.binary(max_size=60) | config_objects.map(json.dumps))
def test_config_parses_and_checks_or_raises_config_error(text: str | bytes) -> None:
    try:
        cfg = check_network_config(parse_config(text))
        vx = parse_vxlan_config(cfg.backend)
    except ConfigError as err:
        assert err.field and str(err).startswith(f"network config: {err.field}: ")
        return
    assert isinstance(vx, VXLANConfig) and 0 <= vx.vni < 2**24 and 0 <= vx.port <= 65535
    assert cfg.families
    for version in cfg.families:
        fam = cfg.family(version)
        assert fam.network is not None and fam.subnet_min is not None
        assert fam.subnet_max is not None
        assert fam.subnet_min in fam.network and fam.subnet_max in fam.network
        assert fam.network.prefixlen + 2 <= fam.subnet_len <= fam.network.max_prefixlen - 2


# --- the command line and FLANNELD_* variables ------------------------------------------------

_flag_names = st.sampled_from([f.name for f in FLAGS] + ["h", "help", "nope"])
_flag_values = (
    st.sampled_from(["true", "false", "0", "1", "0x10", "-1", "1e3", "nan", "inf", "", "=",
                     "http://198.18.0.254:2379", "eth0"])
    | st.integers().map(str)
    | st.text(max_size=12)
)  # fmt: skip
_flag_args = st.one_of(
    st.tuples(st.sampled_from(["-", "--"]), _flag_names).map(lambda t: ["".join(t)]),
    st.tuples(st.sampled_from(["-", "--"]), _flag_names, _flag_values).map(
        lambda t: [f"{t[0]}{t[1]}={t[2]}"]
    ),
    st.tuples(st.sampled_from(["-", "--"]), _flag_names, _flag_values).map(
        lambda t: [f"{t[0]}{t[1]}", t[2]]
    ),
    st.sampled_from([["--"], ["-"], ["---x"], ["-="], ["positional"]]),
    st.text(max_size=12).map(lambda s: [s]),
)
argvs = st.lists(_flag_args, max_size=6).map(lambda parts: [a for p in parts for a in p])
environs = st.dictionaries(
    st.sampled_from([f.env for f in FLAGS]) | st.text(max_size=10), _flag_values, max_size=5
)
KIND_TYPES = {"str": str, "bool": bool, "int": int, "float": float, "list": list}


@FAST
@given(argvs, environs)
def test_flags_parse_or_raise_flag_error(argv: list[str], environ: dict[str, str]) -> None:
    try:
        values, rest = parse_flags(FLAGS, argv, environ)
    except (FlagError, HelpRequested):
        return
    assert isinstance(rest, list) and all(isinstance(a, str) for a in rest)
    assert set(values) == {f.attr for f in FLAGS}
    for flag in FLAGS:
        assert type(values[flag.attr]) is KIND_TYPES[flag.kind], (flag.name, values[flag.attr])
    try:
        opts = parse_options(argv, environ)
    except FlagError as err:
        assert rest and str(err)
        return
    assert isinstance(opts, Options) and not rest


def test_later_flag_wins() -> None:
    # the fault-10 tests rely on this: a flag given twice takes the last value, as in Go
    values, _ = parse_flags(
        FLAGS, ["--etcd-endpoints=http://a:1", "--etcd-endpoints", "http://b:2"]
    )
    assert values["etcd_endpoints"] == "http://b:2"
