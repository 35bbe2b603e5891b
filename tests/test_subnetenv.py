"""Unit tests for subnet.env rendering, atomic writing and reading back (subnet.subnetenv).

Expected texts follow flannel-behaviour.md section 4 (the Documentation/configuration.md example).
File tests use pytest's tmp_path only.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from subnet.subnetenv import SubnetEnv, previous_cidr, read_env_file, write_subnet_env

N4 = ipaddress.IPv4Network
N6 = ipaddress.IPv6Network

V4_ENV = SubnetEnv(N4("10.42.0.0/16"), N4("10.42.0.0/24"), None, None, 1450, True)
DUAL_ENV = SubnetEnv(
    N4("10.42.0.0/16"),
    N4("10.42.0.0/24"),
    N6("2001:cafe:42::/56"),
    N6("2001:cafe:42::/64"),
    1450,
    True,
)
V6_ENV = SubnetEnv(None, None, N6("2001:cafe:42::/56"), N6("2001:cafe:42:7::/64"), 1430, False)


@pytest.fixture
def umask_077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


# --- render ---------------------------------------------------------------------------------------


def test_render_ipv4_only() -> None:
    assert V4_ENV.render() == (
        "FLANNEL_NETWORK=10.42.0.0/16\n"
        "FLANNEL_SUBNET=10.42.0.1/24\n"
        "FLANNEL_MTU=1450\n"
        "FLANNEL_IPMASQ=true\n"
    )


def test_render_dual_stack_matches_the_documented_example() -> None:
    assert DUAL_ENV.render() == (
        "FLANNEL_NETWORK=10.42.0.0/16\n"
        "FLANNEL_SUBNET=10.42.0.1/24\n"
        "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n"
        "FLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\n"
        "FLANNEL_MTU=1450\n"
        "FLANNEL_IPMASQ=true\n"
    )


def test_render_ipv6_only() -> None:
    assert V6_ENV.render() == (
        "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n"
        "FLANNEL_IPV6_SUBNET=2001:cafe:42:7::1/64\n"
        "FLANNEL_MTU=1430\n"
        "FLANNEL_IPMASQ=false\n"
    )


def test_render_subnet_is_the_first_host_address() -> None:
    env = SubnetEnv(N4("10.244.0.0/16"), N4("10.244.17.0/24"), None, None, 8950, False)
    assert "FLANNEL_SUBNET=10.244.17.1/24\n" in env.render()
    assert env.render().endswith("FLANNEL_MTU=8950\nFLANNEL_IPMASQ=false\n")


# --- write ----------------------------------------------------------------------------------------


def test_write_creates_parent_0755_and_writes_exact_text(tmp_path: Path) -> None:
    path = tmp_path / "run" / "flannel" / "subnet.env"
    old = os.umask(0o022)
    try:
        write_subnet_env(str(path), DUAL_ENV)
    finally:
        os.umask(old)
    assert path.read_text() == DUAL_ENV.render()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o755
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["subnet.env"]


def test_new_file_is_0644_even_with_umask_077(tmp_path: Path, umask_077: None) -> None:
    path = tmp_path / "subnet.env"
    write_subnet_env(str(path), V4_ENV)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == V4_ENV.render()


def test_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text("FLANNEL_MTU=1\n")
    path.chmod(0o600)
    write_subnet_env(str(path), V4_ENV)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == V4_ENV.render()


def test_write_replaces_the_file_by_rename(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text("old\n")
    reader = path.open()  # a reader holding the old file keeps seeing the old, complete text
    try:
        old_inode = path.stat().st_ino
        write_subnet_env(str(path), V6_ENV)
        assert path.stat().st_ino != old_inode
        assert reader.read() == "old\n"
    finally:
        reader.close()
    assert path.read_text() == V6_ENV.render()
    assert [p.name for p in tmp_path.iterdir()] == ["subnet.env"]


def test_failed_write_leaves_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "subnet.env"
    path.write_text(V4_ENV.render())

    def broken_rename(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(OSError, match="disk on fire"):
        write_subnet_env(str(path), V6_ENV)
    monkeypatch.undo()
    assert path.read_text() == V4_ENV.render()
    assert [p.name for p in tmp_path.iterdir()] == ["subnet.env"]


def test_write_to_unwritable_location_raises_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        write_subnet_env(str(blocker / "subnet.env"), V4_ENV)


# --- read back ------------------------------------------------------------------------------------


def test_read_missing_file_gives_empty_dict(tmp_path: Path) -> None:
    assert read_env_file(str(tmp_path / "nope.env")) == {}


def test_read_env_file_parses_lines(tmp_path: Path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text(
        "# comment\n"
        "\n"
        "FLANNEL_NETWORK=10.5.0.0/16\n"
        'FLANNEL_SUBNET="10.5.72.1/24"\n'
        "FLANNEL_MTU='1450'\n"
        "  FLANNEL_IPMASQ = true  \n"
        "garbage line\n"
        "EQ=a=b\n"
    )
    assert read_env_file(str(path)) == {
        "FLANNEL_NETWORK": "10.5.0.0/16",
        "FLANNEL_SUBNET": "10.5.72.1/24",
        "FLANNEL_MTU": "1450",
        "FLANNEL_IPMASQ": "true",
        "EQ": "a=b",
    }


def test_written_file_reads_back(tmp_path: Path) -> None:
    path = str(tmp_path / "subnet.env")
    write_subnet_env(path, DUAL_ENV)
    values = read_env_file(path)
    assert values == {
        "FLANNEL_NETWORK": "10.42.0.0/16",
        "FLANNEL_SUBNET": "10.42.0.1/24",
        "FLANNEL_IPV6_NETWORK": "2001:cafe:42::/56",
        "FLANNEL_IPV6_SUBNET": "2001:cafe:42::1/64",
        "FLANNEL_MTU": "1450",
        "FLANNEL_IPMASQ": "true",
    }
    assert previous_cidr(values, "FLANNEL_SUBNET", 4) == N4("10.42.0.0/24")
    assert previous_cidr(values, "FLANNEL_IPV6_SUBNET", 6) == N6("2001:cafe:42::/64")
    assert previous_cidr(values, "FLANNEL_NETWORK", 4) == N4("10.42.0.0/16")


@pytest.mark.parametrize(
    ("value", "version", "expected"),
    [
        ("10.5.72.1/24", 4, N4("10.5.72.0/24")),
        ("10.5.72.0/24", 4, N4("10.5.72.0/24")),
        ("bogus,10.5.72.1/24", 4, N4("10.5.72.0/24")),
        ("10.5.72.1/24,not-a-cidr,", 4, N4("10.5.72.0/24")),
        ("fd00:5::1/64", 6, N6("fd00:5::/64")),
        ("junk,fd00:5::1/64", 6, N6("fd00:5::/64")),
        ("10.5.72.1/24,10.5.73.1/24", 4, None),
        ("bogus", 4, None),
        ("", 4, None),
        ("10.5.72.1/33", 4, None),
        ("fd00:5::1/64", 4, None),
    ],
)
def test_previous_cidr(value: str, version: int, expected: N4 | N6 | None) -> None:
    assert previous_cidr({"KEY": value}, "KEY", version) == expected


def test_previous_cidr_missing_key() -> None:
    assert previous_cidr({}, "FLANNEL_SUBNET", 4) is None
    assert previous_cidr({"FLANNEL_NETWORK": "10.5.0.0/16"}, "FLANNEL_SUBNET", 4) is None


@pytest.mark.parametrize("value", ["10.5.72.1", "10.5.72.1/255.255.255.0"])
def test_previous_cidr_requires_cidr_notation(value: str) -> None:
    assert previous_cidr({"FLANNEL_SUBNET": value}, "FLANNEL_SUBNET", 4) is None
