"""Unit tests for flanneld's command line (flanneld_py.flags, flanneld_py.cli).

Go `flag` syntax and the FLANNELD_* environment rules of flannel-behaviour.md section 7.1/7.2.
Every parse passes an explicit environment so the test machine's variables never leak in.
"""

from __future__ import annotations

from typing import Any

import pytest

from flanneld_py import __version__
from flanneld_py.cli import FLAGS, Options, main, parse_options
from flanneld_py.flags import Flag, FlagError, HelpRequested, parse_bool, parse_flags, usage

NO_ENV: dict[str, str] = {}


def opts(*argv: str, env: dict[str, str] | None = None) -> Options:
    return parse_options(list(argv), NO_ENV if env is None else env)


def flag_error(*argv: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(FlagError) as info:
        opts(*argv, env=env)
    return str(info.value)


# --- defaults -------------------------------------------------------------------------------------

SPEC_DEFAULTS: dict[str, Any] = {
    "etcd-endpoints": "http://127.0.0.1:4001,http://127.0.0.1:2379",
    "etcd-prefix": "/coreos.com/network",
    "etcd-keyfile": "",
    "etcd-certfile": "",
    "etcd-cafile": "",
    "etcd-username": "",
    "etcd-password": "",
    "kube-subnet-mgr": False,
    "kube-api-url": "",
    "kubeconfig-file": "",
    "kube-annotation-prefix": "flannel.alpha.coreos.com",
    "iface": [],
    "iface-regex": [],
    "iface-can-reach": "",
    "public-ip": "",
    "public-ipv6": "",
    "subnet-file": "/run/flannel/subnet.env",
    "net-config-path": "/etc/kube-flannel/net-conf.json",
    "subnet-lease-renew-margin": 60,
    "ip-masq": False,
    "ip-masq-fully-random-disable": False,
    "iptables-resync": 5,
    "iptables-forward-rules": True,
    "ip-blackhole-route": False,
    "healthz-ip": "0.0.0.0",
    "healthz-port": 0,
    "set-node-network-unavailable": True,
    "version": False,
    "v": 0,
}


@pytest.mark.parametrize(("name", "default"), sorted(SPEC_DEFAULTS.items()))
def test_flag_table_default_matches_flannel(name: str, default: Any) -> None:
    by_name = {f.name: f for f in FLAGS}
    assert name in by_name
    assert by_name[name].default == default
    assert type(by_name[name].default) is type(default)


@pytest.mark.parametrize(("name", "default"), sorted(SPEC_DEFAULTS.items()))
def test_parsed_default_matches_flannel(name: str, default: Any) -> None:
    assert getattr(opts(), name.replace("-", "_")) == default


def test_flag_names_are_unique_and_defaults_not_shared() -> None:
    names = [f.name for f in FLAGS]
    assert len(names) == len(set(names))
    first, second = opts(), opts()
    first.iface.append("eth9")
    assert second.iface == []
    assert {f.name: f for f in FLAGS}["iface"].default == []


@pytest.mark.parametrize("arg", ["-vmodule=vxlan=2", "--log_backtrace_at=main.go:10"])
def test_klog_flags_are_accepted(arg: str) -> None:
    assert opts(arg, "--ip-masq").ip_masq is True


def test_flag_env_and_attr_names() -> None:
    flag = Flag("subnet-lease-renew-margin", "int", 60, "")
    assert flag.env == "FLANNELD_SUBNET_LEASE_RENEW_MARGIN"
    assert flag.attr == "subnet_lease_renew_margin"
    assert Flag("v", "int", 0, "").env == "FLANNELD_V"


# --- Go flag syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--etcd-prefix", "/x"],
        ["-etcd-prefix", "/x"],
        ["--etcd-prefix=/x"],
        ["-etcd-prefix=/x"],
    ],
)
def test_string_flag_spellings(argv: list[str]) -> None:
    assert opts(*argv).etcd_prefix == "/x"


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--ip-masq", True),
        ("-ip-masq", True),
        ("--ip-masq=true", True),
        ("--ip-masq=false", False),
        ("--ip-masq=0", False),
        ("--ip-masq=1", True),
        ("-ip-masq=T", True),
        ("-ip-masq=t", True),
        ("--ip-masq=F", False),
        ("--ip-masq=f", False),
        ("--ip-masq=TRUE", True),
        ("--ip-masq=True", True),
        ("--ip-masq=FALSE", False),
        ("--ip-masq=False", False),
    ],
)
def test_bool_spellings(arg: str, expected: bool) -> None:
    assert opts(arg).ip_masq is expected


def test_default_true_bool_can_be_turned_off() -> None:
    assert opts("--iptables-forward-rules=false").iptables_forward_rules is False
    assert opts("-set-node-network-unavailable=0").set_node_network_unavailable is False


@pytest.mark.parametrize("value", ["yes", "", "tRUE", "2", "on"])
def test_invalid_bool_names_the_flag(value: str) -> None:
    message = flag_error(f"--ip-masq={value}")
    assert "ip-masq" in message
    assert repr(value) in message


def test_bool_flag_does_not_consume_the_next_argument() -> None:
    values, rest = parse_flags(FLAGS, ["--ip-masq", "false"], NO_ENV)
    assert values["ip_masq"] is True
    assert rest == ["false"]
    assert "'false'" in flag_error("--ip-masq", "false")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--healthz-port", "8081"], 8081),
        (["--healthz-port=8081"], 8081),
        (["-healthz-port=0x1f91"], 8081),
    ],
)
def test_int_flag(argv: list[str], expected: int) -> None:
    assert opts(*argv).healthz_port == expected


@pytest.mark.parametrize("value", ["abc", "1.5", ""])
def test_invalid_int_names_the_flag(value: str) -> None:
    message = flag_error(f"--healthz-port={value}")
    assert "healthz-port" in message
    assert repr(value) in message


def test_float_flag() -> None:
    assert opts("--resync-period=2.5").resync_period == 2.5
    assert "resync-period" in flag_error("--resync-period=soon")


def test_unknown_flag_is_an_error() -> None:
    message = flag_error("--no-such-flag")
    assert "no-such-flag" in message
    assert "not defined" in message
    assert "not defined" in flag_error("-x=1")


@pytest.mark.parametrize("flag", ["--etcd-prefix", "-healthz-port", "--iface"])
def test_missing_value_is_an_error(flag: str) -> None:
    message = flag_error("--ip-masq", flag)
    assert flag.lstrip("-") in message
    assert "argument" in message


@pytest.mark.parametrize("arg", ["---ip-masq", "-=x", "--=x"])
def test_bad_flag_syntax(arg: str) -> None:
    assert "bad flag syntax" in flag_error(arg)


def test_value_may_start_with_a_dash() -> None:
    assert opts("--etcd-prefix", "-weird").etcd_prefix == "-weird"


def test_empty_value_with_equals() -> None:
    assert opts("--etcd-prefix=").etcd_prefix == ""


def test_value_keeps_later_equals_signs() -> None:
    assert opts("--etcd-password=a=b=c").etcd_password == "a=b=c"


def test_last_value_of_a_scalar_flag_wins() -> None:
    assert opts("--healthz-port=1", "--healthz-port=2").healthz_port == 2


def test_double_dash_stops_parsing() -> None:
    values, rest = parse_flags(FLAGS, ["--ip-masq", "--", "--healthz-port=5", "x"], NO_ENV)
    assert values["ip_masq"] is True
    assert values["healthz_port"] == 0
    assert rest == ["--healthz-port=5", "x"]
    assert opts("--ip-masq", "--").ip_masq is True


def test_first_positional_argument_stops_parsing() -> None:
    values, rest = parse_flags(FLAGS, ["-v=2", "extra", "--ip-masq"], NO_ENV)
    assert values["v"] == 2
    assert values["ip_masq"] is False
    assert rest == ["extra", "--ip-masq"]
    values, rest = parse_flags(FLAGS, ["-", "--ip-masq"], NO_ENV)
    assert rest == ["-", "--ip-masq"]


def test_parse_options_rejects_positional_arguments() -> None:
    message = flag_error("--ip-masq", "extra")
    assert "'extra'" in message


def test_repeatable_iface_keeps_order() -> None:
    o = opts("--iface=eth1", "-iface", "10.0.0.5", "--iface", "eth0")
    assert o.iface == ["eth1", "10.0.0.5", "eth0"]
    assert opts("--iface-regex=^en", "--iface-regex", "^eth").iface_regex == ["^en", "^eth"]


@pytest.mark.parametrize("arg", ["-h", "--h", "-help", "--help", "-help=true"])
def test_help_raises_help_requested(arg: str) -> None:
    with pytest.raises(HelpRequested):
        opts("--ip-masq", arg)


def test_parse_bool_is_go_parse_bool() -> None:
    for text in ("1", "t", "T", "TRUE", "true", "True"):
        assert parse_bool("x", text) is True
    for text in ("0", "f", "F", "FALSE", "false", "False"):
        assert parse_bool("x", text) is False
    with pytest.raises(FlagError, match="-x"):
        parse_bool("x", "Yes")


# --- FLANNELD_* environment -----------------------------------------------------------------------


def test_env_fills_flags_not_on_the_command_line() -> None:
    o = opts(
        env={
            "FLANNELD_ETCD_PREFIX": "/env",
            "FLANNELD_IP_MASQ": "true",
            "FLANNELD_HEALTHZ_PORT": "8081",
            "FLANNELD_IPTABLES_FORWARD_RULES": "0",
            "FLANNELD_RESYNC_PERIOD": "7.5",
        }
    )
    assert o.etcd_prefix == "/env"
    assert o.ip_masq is True
    assert o.healthz_port == 8081
    assert o.iptables_forward_rules is False
    assert o.resync_period == 7.5


def test_command_line_beats_env() -> None:
    env = {"FLANNELD_ETCD_PREFIX": "/env", "FLANNELD_IP_MASQ": "true"}
    o = opts("--etcd-prefix=/cli", "--ip-masq=false", env=env)
    assert o.etcd_prefix == "/cli"
    assert o.ip_masq is False


def test_empty_env_value_is_ignored() -> None:
    o = opts(env={"FLANNELD_ETCD_PREFIX": "", "FLANNELD_IPTABLES_FORWARD_RULES": ""})
    assert o.etcd_prefix == "/coreos.com/network"
    assert o.iptables_forward_rules is True


def test_env_for_list_flag_is_one_value() -> None:
    assert opts(env={"FLANNELD_IFACE": "eth0,eth1"}).iface == ["eth0,eth1"]
    assert opts("--iface=eth2", env={"FLANNELD_IFACE": "eth0"}).iface == ["eth2"]


def test_invalid_env_value_names_the_variable() -> None:
    message = flag_error(env={"FLANNELD_IP_MASQ": "yes"})
    assert "FLANNELD_IP_MASQ" in message
    assert "'yes'" in message
    assert "FLANNELD_HEALTHZ_PORT" in flag_error(env={"FLANNELD_HEALTHZ_PORT": "x"})


def test_unrelated_env_is_ignored() -> None:
    o = opts(env={"FLANNEL_IP_MASQ": "true", "flanneld_ip_masq": "true", "FLANNELD_BOGUS": "1"})
    assert o.ip_masq is False


def test_flanneld_version_env_has_no_effect() -> None:
    assert opts(env={"FLANNELD_VERSION": "true"}).version is False


# --- usage and main -------------------------------------------------------------------------------


def test_usage_lists_every_flag_with_env_and_default() -> None:
    text = usage("flanneld-py", FLAGS, "intro text")
    assert text.startswith("Usage: flanneld-py [flags]\n")
    for f in FLAGS:
        assert f"--{f.name}" in text
        assert (f"env: {f.env}" in text) == f.from_env
    assert "(default '/run/flannel/subnet.env')" in text


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for f in FLAGS:
        monkeypatch.delenv(f.env, raising=False)


def test_main_help_prints_usage(clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--etcd-endpoints" in out
    assert "FLANNELD_IP_MASQ" in out


def test_main_bad_flag_exits_2(clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_main_version(clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().err.strip() == __version__
