"""The ``flannel`` CNI meta-plugin: render a real plugin's config from subnet.env, then delegate.

Why it exists: flanneld only leases this node a pod subnet and writes it to subnet.env; it never
touches pods. The container runtime calls a CNI plugin for every pod, and this is the one it calls.
It reads subnet.env, renders the configuration of a plugin that does the real work (``bridge`` with
``host-local`` IPAM unless the network config says otherwise), saves that configuration per
container so DEL undoes exactly what ADD did even if subnet.env changed meanwhile, and runs it.

Guarantees:

- The rendered delegate is the one flannel's own plugin renders from the same inputs
  (flannel-io/cni-plugin flannel.go and flannel_linux.go), so nodes running either plugin agree.
- The delegate's stdout and exit status reach the runtime unchanged. This plugin's own failures
  are CNI error results (JSON on stdout, exit status 1) with the codes listed in `ErrorCode`.
- DEL is idempotent: with no saved configuration there is nothing to undo, and it succeeds.
- The saved configuration is replaced atomically (temp file, fsync, rename): mode 0600 in a
  directory created with mode 0700.

Deliberate differences from flannel's plugin, none of which changes the rendered delegate:
the delegate executable is looked up *before* the configuration is saved (so a typo in
``delegate.type`` cannot leave a saved file that makes every later DEL fail); CHECK fails for a
container ADD never set up (flannel's succeeds for any); a known subnet.env key without ``=`` is
reported
instead of crashing; CNI_CONTAINERID must match the CNI spec's pattern because it names a file.
"""

from __future__ import annotations

import copy
import enum
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/cni/flannel"
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0")
"""CNI spec versions this plugin accepts in ``cniVersion`` (and reports for VERSION)."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_CONTAINER_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")  # CNI spec, "Parameters"
_CIDR = re.compile(r"[0-9A-Fa-f:.]+/[0-9]+")  # what Go's net.ParseCIDR accepts: no zone, no mask
_UINT = re.compile(r"[0-9]+")
_SURROGATES = re.compile("[\ud800-\udfff]")
_SUBNET_ENV_KEYS = frozenset(
    {
        "FLANNEL_NETWORK",
        "FLANNEL_SUBNET",
        "FLANNEL_IPV6_NETWORK",
        "FLANNEL_IPV6_SUBNET",
        "FLANNEL_MTU",
        "FLANNEL_IPMASQ",
    }
)


class ErrorCode(enum.IntEnum):
    """CNI error codes this plugin reports (CNI spec, "Error" result; 999 as in libcni)."""

    INCOMPATIBLE_CNI_VERSION = 1
    """``cniVersion`` is not in SUPPORTED_VERSIONS, or CHECK with a version before 0.4.0."""
    CONTAINER_UNKNOWN = 3
    """CHECK for a container that has no saved configuration (ADD never ran or DEL already did)."""
    INVALID_ENVIRONMENT = 4
    """CNI_COMMAND missing or unknown; a required CNI_* variable missing; bad CNI_CONTAINERID."""
    IO_FAILURE = 5
    """subnet.env or the saved config unreadable, saving failed, the delegate could not run."""
    DECODING_FAILURE = 6
    """stdin, or the saved configuration for CHECK, is not a JSON object."""
    INVALID_NETWORK_CONFIG = 7
    """Bad netconf field, delegate validation, malformed subnet.env, delegate not in CNI_PATH."""
    TRY_AGAIN_LATER = 11
    """subnet.env does not exist yet: flanneld has not leased a subnet (or has not started)."""
    INTERNAL = 999
    """A bug in this plugin (unexpected exception)."""


class CniError(Exception):
    """A failure reported to the runtime as a CNI error result instead of a delegate result."""

    def __init__(self, code: ErrorCode, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> bytes:
        """The error result: ``{"cniVersion", "code", "msg", "details"}`` as UTF-8 JSON."""
        body = {
            "cniVersion": cni_version,
            "code": int(self.code),
            "msg": self.msg,
            "details": self.details,
        }
        return _encode(body)


@dataclass(frozen=True)
class FlannelEnv:
    """What flanneld told this node through subnet.env (flannel-io/flannel pkg/subnet/subnet.go).

    At least one of ``networks``/``ipv6_networks`` and one of ``subnet``/``ipv6_subnet`` is set.
    """

    mtu: int
    """FLANNEL_MTU: MTU for pod interfaces, in bytes (the backend device's MTU)."""
    ipmasq: bool
    """FLANNEL_IPMASQ: flanneld itself masquerades pod traffic leaving the cluster network."""
    networks: tuple[Network, ...] = ()
    """FLANNEL_NETWORK: cluster-wide pod network(s), deduplicated, in file order."""
    subnet: Network | None = None
    """FLANNEL_SUBNET masked to its network address (``10.244.1.1/24`` -> ``10.244.1.0/24``)."""
    ipv6_networks: tuple[Network, ...] = ()
    """FLANNEL_IPV6_NETWORK: as ``networks``, for IPv6."""
    ipv6_subnet: Network | None = None
    """FLANNEL_IPV6_SUBNET: as ``subnet``, for IPv6."""


class Output(NamedTuple):
    """What the plugin process writes to stdout and the status it exits with."""

    stdout: bytes
    exit_code: int


# --------------------------------------------------------------------------------------------
# subnet.env


def read_subnet_env(path: str) -> FlannelEnv:
    """Read subnet.env at ``path`` and parse it with `parse_subnet_env`.

    Raises CniError: TRY_AGAIN_LATER if the file does not exist, IO_FAILURE if it cannot be read,
    INVALID_NETWORK_CONFIG if a key is missing or invalid. ``msg`` always starts with ``path``.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as e:
        raise CniError(
            ErrorCode.TRY_AGAIN_LATER,
            f"{path}: not found; flanneld writes it once it holds a subnet lease",
            str(e),
        ) from e
    except OSError as e:
        raise CniError(ErrorCode.IO_FAILURE, f"{path}: cannot read: {e.strerror}", str(e)) from e
    return parse_subnet_env(data.decode("utf-8", "surrogateescape"), source=path)


def parse_subnet_env(text: str, source: str = DEFAULT_SUBNET_FILE) -> FlannelEnv:
    """Parse subnet.env text the way flannel's CNI plugin does (flannel-io/cni-plugin flannel.go).

    Format (written by flanneld, flannel-io/flannel pkg/subnet/subnet.go): ``KEY=value`` lines.
    Each line (one trailing CR dropped) is split on its first ``=``; nothing is trimmed or
    unquoted, so ``FLANNEL_MTU="1450"`` is invalid and ``FLANNEL_IPMASQ="true"`` means false.
    Unknown keys and other lines are ignored; a repeated key's last line wins.

    - FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK: comma-separated CIDRs, masked, deduplicated.
    - FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET: one CIDR, masked to its network address.
    - FLANNEL_MTU: decimal unsigned 32-bit integer. FLANNEL_IPMASQ: true iff exactly ``true``.

    Raises CniError(INVALID_NETWORK_CONFIG) naming ``source`` and the key when a value does not
    parse, or when MTU, IPMASQ, both network keys or both subnet keys are missing.
    """
    networks: tuple[Network, ...] | None = None
    ipv6_networks: tuple[Network, ...] | None = None
    subnet: Network | None = None
    ipv6_subnet: Network | None = None
    mtu: int | None = None
    ipmasq: bool | None = None
    for line in text.split("\n"):
        key, sep, value = line.removesuffix("\r").partition("=")
        if key not in _SUBNET_ENV_KEYS:
            continue
        try:
            if not sep:
                raise ValueError("the line has no '='")
            match key:
                case "FLANNEL_NETWORK":
                    networks = _cidr_list(value)
                case "FLANNEL_IPV6_NETWORK":
                    ipv6_networks = _cidr_list(value)
                case "FLANNEL_SUBNET":
                    subnet = _cidr(value)
                case "FLANNEL_IPV6_SUBNET":
                    ipv6_subnet = _cidr(value)
                case "FLANNEL_MTU":
                    mtu = _uint32(value)
                case "FLANNEL_IPMASQ":
                    ipmasq = value == "true"
        except ValueError as e:
            raise CniError(
                ErrorCode.INVALID_NETWORK_CONFIG, f"{source}: {key} is invalid: {e}", line
            ) from e

    missing = []
    if networks is None and ipv6_networks is None:
        missing.append("FLANNEL_NETWORK and FLANNEL_IPV6_NETWORK are both missing")
    if subnet is None and ipv6_subnet is None:
        missing.append("FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET are both missing")
    if mtu is None:
        missing.append("FLANNEL_MTU is missing")
    if ipmasq is None:
        missing.append("FLANNEL_IPMASQ is missing")
    if missing or mtu is None or ipmasq is None:
        raise CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"{source}: {'; '.join(missing)}")
    return FlannelEnv(
        mtu=mtu,
        ipmasq=ipmasq,
        networks=networks or (),
        subnet=subnet,
        ipv6_networks=ipv6_networks or (),
        ipv6_subnet=ipv6_subnet,
    )


def _cidr(text: str) -> Network:
    """``addr/len`` (host bits allowed) -> its network; ValueError otherwise."""
    if not _CIDR.fullmatch(text):
        raise ValueError(f"{text!r} is not an address/prefix-length CIDR")
    return ipaddress.ip_interface(text).network


def _cidr_list(text: str) -> tuple[Network, ...]:
    return tuple(dict.fromkeys(_cidr(part) for part in text.split(",")))


def _uint32(text: str) -> int:
    if not _UINT.fullmatch(text) or int(text) > 0xFFFFFFFF:
        raise ValueError(f"{text!r} is not an unsigned 32-bit decimal integer")
    return int(text)


# --------------------------------------------------------------------------------------------
# rendering


def render_delegate(netconf: Mapping[str, Any], env: FlannelEnv) -> dict[str, Any]:
    """The delegate plugin's network config for ``netconf`` on a node described by ``env``.

    ``netconf`` is this plugin's config as decoded from stdin (flannel-io/cni-plugin flannel.go
    NetConf; top-level keys match case-insensitively, as Go's encoding/json does). The result
    is ``netconf["delegate"]`` (deep-copied, never mutated) with, as in flannel_linux.go:

    - always set: ``name`` = netconf name; ``ipam`` (below); ``cniVersion`` and
      ``runtimeConfig`` when the netconf has them;
    - set only when absent: ``type`` = ``bridge``, ``ipMasq`` = not env.ipmasq,
      ``mtu`` = env.mtu, and for type ``bridge`` ``isGateway`` = true;
    - ``ipam`` = netconf ipam (or ``{}``) with ``type`` defaulting to ``host-local``,
      ``ranges`` = ``[[{"subnet": <IPv4 subnet>}], [{"subnet": <IPv6 subnet>}]]`` (present
      families only) and ``routes`` = netconf ipam routes + ``{"dst": <network>}`` for every
      IPv4 then IPv6 cluster network.

    Raises CniError(INVALID_NETWORK_CONFIG) when ``name`` is not a non-empty string, a field
    has the wrong JSON type, the delegate's ``type`` is not a string, or the delegate has
    ``name`` or ``ipam`` (flannel sets those).
    """
    name = _field(netconf, "name")
    if not isinstance(name, str) or not name:
        raise _invalid("'name' must be a non-empty string")
    delegate = _object_field(netconf, "delegate")
    if "type" in delegate and not isinstance(delegate["type"], str):
        raise _invalid("'delegate.type' must be a string")
    for key in ("name", "ipam"):
        if key in delegate:
            raise _invalid(f"'delegate' must not have {key!r}: flannel sets it")

    if _field(netconf, "runtimeConfig") is not None:
        delegate["runtimeConfig"] = _object_field(netconf, "runtimeConfig")
    delegate["name"] = name
    delegate.setdefault("type", "bridge")
    delegate.setdefault("ipMasq", not env.ipmasq)
    delegate.setdefault("mtu", env.mtu)
    if delegate["type"] == "bridge":
        delegate.setdefault("isGateway", True)
    cni_version = _str_field(netconf, "cniVersion", "")
    if cni_version:
        delegate["cniVersion"] = cni_version
    delegate["ipam"] = _render_ipam(netconf, env)
    return delegate


def _render_ipam(netconf: Mapping[str, Any], env: FlannelEnv) -> dict[str, Any]:
    ipam = _object_field(netconf, "ipam")
    ipam.setdefault("type", "host-local")
    subnets = (env.subnet, env.ipv6_subnet)
    ipam["ranges"] = [[{"subnet": str(sn)}] for sn in subnets if sn is not None]
    routes = ipam.get("routes")
    if routes is None:
        routes = []
    if not isinstance(routes, list):
        raise _invalid("'ipam.routes' must be a list")
    for i, route in enumerate(routes):
        dst = route.get("dst") if isinstance(route, dict) else None
        try:
            _cidr(dst if isinstance(dst, str) else "")
        except ValueError as e:
            raise _invalid(f"'ipam.routes[{i}]' needs a CIDR 'dst': {e}") from e
    networks = (*env.networks, *env.ipv6_networks)
    ipam["routes"] = [*routes, *({"dst": str(nw)} for nw in networks)]
    return ipam


def _field(conf: Mapping[str, Any], name: str) -> Any:
    """``conf[name]`` matched case-insensitively, last match winning, as Go decodes a struct."""
    found = None
    for key, value in conf.items():
        if key.casefold() == name.casefold():
            found = value
    return found


def _str_field(conf: Mapping[str, Any], name: str, default: str) -> str:
    value = _field(conf, name)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise _invalid(f"{name!r} must be a string")
    return value


def _object_field(conf: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A deep copy of the JSON object ``conf[name]``, or ``{}`` when absent or null."""
    value = _field(conf, name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{name!r} must be a JSON object")
    return copy.deepcopy(value)


def _invalid(msg: str) -> CniError:
    return CniError(ErrorCode.INVALID_NETWORK_CONFIG, f"invalid flannel network config: {msg}")


# --------------------------------------------------------------------------------------------
# the plugin process


def run(environ: Mapping[str, str], stdin_data: bytes) -> Output:
    """Run one CNI command (CNI spec, "Execution Protocol"); no exception escapes.

    ``environ`` supplies CNI_COMMAND (ADD, DEL, CHECK or VERSION) and the other CNI_* variables
    and is passed unchanged to the delegate; ``stdin_data`` is the network config JSON.
    ADD: render the delegate from subnet.env, save it to ``<dataDir>/<CNI_CONTAINERID>``, run
    the delegate's ADD. DEL: run the delegate's DEL with the saved config and remove it (no saved
    config: succeed silently). CHECK: succeed when ADD saved a config for the container. VERSION:
    report SUPPORTED_VERSIONS. Delegate output and status are returned as they are; this
    plugin's own failures become an error result with exit status 1.
    """
    version = "1.0.0"
    try:
        command = environ.get("CNI_COMMAND", "")
        if command == "VERSION":
            return Output(_version_result(stdin_data), 0)
        if command not in ("ADD", "DEL", "CHECK"):
            raise CniError(
                ErrorCode.INVALID_ENVIRONMENT,
                f"unknown CNI_COMMAND {command!r}: expected ADD, DEL, CHECK or VERSION",
            )
        _check_environment(command, environ)
        netconf = _decode_object(stdin_data, "network config on stdin")
        requested = _str_field(netconf, "cniVersion", "0.1.0")
        if requested in SUPPORTED_VERSIONS:
            version = requested
        _check_version(command, requested)
        data_dir = Path(_str_field(netconf, "dataDir", DEFAULT_DATA_DIR))
        scratch = data_dir / environ["CNI_CONTAINERID"]
        if command == "ADD":
            return _cmd_add(netconf, scratch, environ)
        if command == "DEL":
            return _cmd_del(scratch, environ)
        return _cmd_check(scratch, environ)
    except CniError as e:
        return Output(e.to_json(version), 1)
    except Exception as e:  # the runtime must always get a JSON result, even on a bug
        error = CniError(ErrorCode.INTERNAL, f"flannel plugin failed unexpectedly: {e!r}")
        return Output(error.to_json(version), 1)


def _check_environment(command: str, environ: Mapping[str, str]) -> None:
    required = ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"]
    if command != "DEL":
        required.insert(1, "CNI_NETNS")
    missing = [name for name in required if not environ.get(name)]
    if missing:
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"required environment variables missing: {', '.join(missing)}",
        )
    if not _CONTAINER_ID.fullmatch(environ["CNI_CONTAINERID"]):
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"invalid CNI_CONTAINERID {environ['CNI_CONTAINERID']!r}: must match "
            f"{_CONTAINER_ID.pattern}",
        )


def _check_version(command: str, requested: str) -> None:
    if requested not in SUPPORTED_VERSIONS:
        raise CniError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION,
            f"cniVersion {requested!r} is not supported; supported: "
            f"{', '.join(SUPPORTED_VERSIONS)}",
        )
    first_with_check = SUPPORTED_VERSIONS.index("0.4.0")
    if command == "CHECK" and SUPPORTED_VERSIONS.index(requested) < first_with_check:
        raise CniError(
            ErrorCode.INCOMPATIBLE_CNI_VERSION,
            f"CHECK needs cniVersion 0.4.0 or later, the config has {requested}",
        )


def _version_result(stdin_data: bytes) -> bytes:
    requested: Any = None
    try:
        conf = json.loads(stdin_data)
        requested = conf.get("cniVersion") if isinstance(conf, dict) else None
    except (ValueError, RecursionError):
        pass
    version = requested if isinstance(requested, str) and requested else "1.0.0"
    return _encode({"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)})


def _cmd_add(netconf: Mapping[str, Any], scratch: Path, environ: Mapping[str, str]) -> Output:
    env = read_subnet_env(_str_field(netconf, "subnetFile", DEFAULT_SUBNET_FILE))
    delegate = render_delegate(netconf, env)
    executable = find_plugin(delegate["type"], environ.get("CNI_PATH", ""))
    payload = _encode(delegate)
    try:
        _save_atomically(scratch, payload)
    except OSError as e:
        raise CniError(
            ErrorCode.IO_FAILURE,
            f"cannot save the delegate config to {scratch}: {e.strerror}",
            str(e),
        ) from e
    return _exec_plugin(executable, payload, environ)


def _cmd_del(scratch: Path, environ: Mapping[str, str]) -> Output:
    payload = _read_saved(scratch)
    if payload is None:
        return Output(b"", 0)  # never added, or already deleted: nothing to undo
    try:
        plugin_type = _decode_object(payload, str(scratch))["type"]
        if not isinstance(plugin_type, str):
            raise TypeError("'type' is not a string")
    except (CniError, KeyError, TypeError) as e:
        # As flannel does: a config nobody can use must not block pod deletion forever.
        print(f"flannel: ignoring unusable saved config {scratch}: {e}", file=sys.stderr)
        scratch.unlink(missing_ok=True)
        return Output(b"", 0)
    result = _exec_plugin(find_plugin(plugin_type, environ.get("CNI_PATH", "")), payload, environ)
    if result.exit_code == 0:
        try:
            scratch.unlink(missing_ok=True)
        except OSError as e:
            print(f"flannel: cannot remove {scratch}: {e}", file=sys.stderr)
    return result


def _cmd_check(scratch: Path, environ: Mapping[str, str]) -> Output:
    payload = _read_saved(scratch)
    if payload is None:
        raise CniError(
            ErrorCode.CONTAINER_UNKNOWN,
            f"no saved delegate config {scratch}: ADD has not run for this container",
        )
    plugin_type = _decode_object(payload, str(scratch)).get("type")
    if not isinstance(plugin_type, str):
        raise CniError(ErrorCode.DECODING_FAILURE, f"{scratch}: saved config has no string 'type'")
    # Like flannel's plugin, CHECK does not call the delegate: the bridge plugin's CHECK rejects
    # the routes flannel's own delegate config adds (the cluster network route), so delegating
    # would fail every healthy pod. A container ADD has set up is reported healthy.
    return Output(b"", 0)


def find_plugin(plugin_type: str, cni_path: str) -> str:
    """Path of the executable named ``plugin_type`` in the first CNI_PATH directory holding it.

    ``cni_path`` is colon-separated (CNI spec, CNI_PATH; libcni invoke.FindInPath).
    Raises CniError(INVALID_NETWORK_CONFIG) if ``plugin_type`` is not a plain file name or no
    directory holds an executable regular file of that name.
    """
    if not plugin_type or "/" in plugin_type or plugin_type in (".", ".."):
        raise _invalid(f"delegate type {plugin_type!r} is not a plugin name")
    for directory in cni_path.split(os.pathsep):
        candidate = os.path.join(directory, plugin_type)
        if directory and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(
        ErrorCode.INVALID_NETWORK_CONFIG,
        f"delegate plugin {plugin_type!r} not found in CNI_PATH {cni_path!r}",
    )


def _exec_plugin(executable: str, payload: bytes, environ: Mapping[str, str]) -> Output:
    try:
        proc = subprocess.run(
            [executable], input=payload, stdout=subprocess.PIPE, env=dict(environ), check=False
        )
    except OSError as e:
        raise CniError(
            ErrorCode.IO_FAILURE,
            f"cannot execute delegate plugin {executable}: {e.strerror}",
            str(e),
        ) from e
    if proc.returncode < 0:
        raise CniError(
            ErrorCode.IO_FAILURE,
            f"delegate plugin {executable} was killed by signal {-proc.returncode}",
            proc.stdout.decode("utf-8", "replace"),
        )
    return Output(proc.stdout, proc.returncode)


def _read_saved(scratch: Path) -> bytes | None:
    try:
        return scratch.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CniError(
            ErrorCode.IO_FAILURE,
            f"cannot read the saved delegate config {scratch}: {e.strerror}",
            str(e),
        ) from e


def _save_atomically(path: Path, payload: bytes) -> None:
    """Replace ``path`` with ``payload``: temp file (0600) beside it, fsync, rename, fsync dir."""
    os.makedirs(path.parent, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _decode_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise CniError(ErrorCode.DECODING_FAILURE, f"{what} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise CniError(ErrorCode.DECODING_FAILURE, f"{what} is not a JSON object")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _encode(value: Mapping[str, Any]) -> bytes:
    """Compact JSON with sorted keys, the way Go marshals a map; text that is not valid Unicode
    (undecodable input echoed back) becomes U+FFFD, as Go writes it."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return _SURROGATES.sub("\ufffd", text).encode()


def main() -> int:
    """Entry point for the ``flannel`` executable: CNI_* from the environment, config on stdin.

    Writes the result (or the delegate's output) to stdout and returns the exit status.
    Works under any argv[0]; arguments are ignored, as the CNI spec passes none.
    """
    stdin_data = sys.stdin.buffer.read() if sys.stdin is not None else b""
    output = run(os.environ, stdin_data)
    sys.stdout.buffer.write(output.stdout)
    sys.stdout.buffer.flush()
    return output.exit_code


if __name__ == "__main__":
    sys.exit(main())
