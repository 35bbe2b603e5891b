"""etcd over TLS, as flanneld's `--etcd-keyfile/--etcd-certfile/--etcd-cafile/--etcd-username/
--etcd-password` flags use it (issue 5, "etcd with TLS client certificates and with
username/password").

Each test starts its own etcd on loopback with https client URLs and certificates made in a
temporary directory with the `openssl` command: a CA, a server certificate for IP 127.0.0.1, a
client certificate signed by that CA, and one signed by an unrelated CA. The registry must put the
network config and acquire a lease through TLS, and must fail with DatastoreUnavailable (never
another exception) when etcd does not accept the client.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from subnet.errors import DatastoreUnavailable
from subnet.etcd import EtcdOptions, EtcdRegistry, EtcdSubnetManager
from subnet.lease import LeaseAttrs
from tests.conftest import EtcdServer, _require_private_netns
from tests.testbed import wait_for

pytestmark = pytest.mark.etcd

CONFIG = '{"Network": "10.7.0.0/16", "Backend": {"Type": "vxlan"}}'
PREFIX = "/tls-test/network"
ATTRS = LeaseAttrs(
    ipaddress.IPv4Address("198.18.0.7"), None, "vxlan", {"VNI": 1, "VtepMAC": "0e:00:00:00:00:07"}
)


def openssl(*args: str, cwd: Path) -> None:
    """Run one openssl command in `cwd`; fails the test with openssl's stderr."""
    res = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed: {res.stderr.strip()}")


def make_ca(d: Path, name: str) -> None:
    """`<name>.key` and a self-signed `<name>.crt` allowed to sign certificates."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip


def make_cert(d: Path, name: str, ca: str, cn: str, extensions: str) -> None:
    """`<name>.key` and `<name>.crt` with subject CN `cn`, signed by `ca`."""
    (d / f"{name}.ext").write_text(extensions)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}",
            cwd=d)  # fmt: skip
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
            cwd=d)  # fmt: skip


@dataclass(frozen=True)
class Pki:
    """Paths of the generated files."""

    dir: Path

    def __getitem__(self, name: str) -> str:
        return str(self.dir / name)


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    d = Path(tempfile.mkdtemp(prefix="fpy-pki-"))
    try:
        make_ca(d, "ca")
        make_ca(d, "other-ca")
        make_cert(d, "server", "ca", "127.0.0.1",
                  "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
                  "keyUsage=critical,digitalSignature,keyEncipherment\n")  # fmt: skip
        client_ext = "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n"
        make_cert(d, "client", "ca", "root", client_ext)  # CN = etcd user for cert auth
        make_cert(d, "stranger", "other-ca", "root", client_ext)
        yield Pki(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


class TlsEtcdServer(EtcdServer):
    """EtcdServer with https client URLs; `client_cert_auth` makes etcd demand a client
    certificate signed by the CA."""

    def __init__(self, pki: Pki, client_cert_auth: bool) -> None:
        super().__init__()
        self.url = f"https://127.0.0.1:{self.client_port}"
        self.pki = pki
        self.client_cert_auth = client_cert_auth

    def start(self) -> TlsEtcdServer:
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = ["--name", "t", "--data-dir", f"{self.workdir}/data",
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"t={peer}", "--log-level", "warn",
                "--cert-file", self.pki["server.crt"],
                "--key-file", self.pki["server.key"]]  # fmt: skip
        if self.client_cert_auth:  # (a trusted CA alone makes etcd demand client certificates)
            args += ["--client-cert-auth", "--trusted-ca-file", self.pki["ca.crt"]]
        with open(f"{self.workdir}/etcd.log", "ab") as log:
            self.proc = subprocess.Popen(["etcd", *args], stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"etcd exited: {Path(self.workdir, 'etcd.log').read_text()}")
            with socket.create_connection(("127.0.0.1", self.client_port), timeout=1):
                return True

        wait_for("etcd (TLS) to listen", up, timeout=30)
        return self


def tls_server(pki: Pki, client_cert_auth: bool) -> Iterator[TlsEtcdServer]:
    _require_private_netns()
    server = TlsEtcdServer(pki, client_cert_auth)
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.fixture
def mtls_etcd(pki: Pki) -> Iterator[TlsEtcdServer]:
    """etcd that demands a client certificate signed by the test CA."""
    yield from tls_server(pki, client_cert_auth=True)


@pytest.fixture
def tls_etcd(pki: Pki) -> Iterator[TlsEtcdServer]:
    """etcd with a server certificate only (clients authenticate by username/password)."""
    yield from tls_server(pki, client_cert_auth=False)


def registry(server: TlsEtcdServer, **opts: str) -> EtcdRegistry:
    return EtcdRegistry(EtcdOptions(endpoints=server.url, prefix=PREFIX, timeout=3.0, **opts))


def client_cert(pki: Pki, name: str = "client") -> dict[str, str]:
    return {"keyfile": pki[f"{name}.key"], "certfile": pki[f"{name}.crt"], "cafile": pki["ca.crt"]}


def put_config_and_acquire(reg: EtcdRegistry, etcd_ready: bool = False) -> None:
    """Write the config, acquire a lease and read its key back, all through `reg`; retries the
    first write for a while unless `etcd_ready` (etcd may still be electing itself leader)."""

    def config_written() -> bool:
        try:
            reg.put(f"{reg.prefix}/config", CONFIG.encode())
        except DatastoreUnavailable:
            return False
        return True

    if etcd_ready:
        reg.put(f"{reg.prefix}/config", CONFIG.encode())
    else:
        wait_for("the config to be written over TLS", config_written, timeout=30, interval=0.5)
    sm = EtcdSubnetManager(reg)
    lease = sm.acquire_lease(sm.get_network_config(), ATTRS)
    assert lease.subnet is not None and lease.subnet.subnet_of(ipaddress.IPv4Network("10.7.0.0/16"))
    items, _ = reg.list_subnets()
    assert [(i.key, i.value, i.lease_id) for i in items] == [
        (f"{PREFIX}/subnets/{lease.key}", ATTRS.encode(), lease.lease_id)
    ]
    assert reg.ttl(lease.lease_id) is not None


def enable_auth(server: TlsEtcdServer, pki: Pki) -> None:
    """Create user root (password s3cret) with role root and turn authentication on, over mTLS."""
    import grpc
    from pyetcd import etcdrpc

    creds = grpc.ssl_channel_credentials(
        Path(pki["ca.crt"]).read_bytes(),
        Path(pki["client.key"]).read_bytes(),
        Path(pki["client.crt"]).read_bytes(),
    )
    with grpc.secure_channel(f"127.0.0.1:{server.client_port}", creds) as channel:
        auth = etcdrpc.AuthStub(channel)

        def user_added() -> bool:
            try:
                auth.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password="s3cret"), timeout=5)
            except grpc.RpcError:
                return False
            return True

        wait_for("etcd to accept requests", user_added, timeout=30, interval=0.5)
        auth.RoleAdd(etcdrpc.AuthRoleAddRequest(name="root"), timeout=5)
        auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=5)
        auth.AuthEnable(etcdrpc.AuthEnableRequest(), timeout=5)


def test_client_certificate_puts_config_and_acquires_a_lease(
    mtls_etcd: TlsEtcdServer, pki: Pki
) -> None:
    reg = registry(mtls_etcd, **client_cert(pki))
    try:
        put_config_and_acquire(reg)
    finally:
        reg.close()


@pytest.mark.parametrize(
    "opts",
    [
        pytest.param({"cafile": "ca.crt"}, id="no-client-certificate"),
        pytest.param(
            {"keyfile": "stranger.key", "certfile": "stranger.crt", "cafile": "ca.crt"},
            id="certificate-of-another-ca",
        ),
        pytest.param({"keyfile": "client.key", "certfile": "client.crt"}, id="no-ca-file"),
    ],
)
def test_connection_without_an_accepted_certificate_fails_as_datastore_unavailable(
    mtls_etcd: TlsEtcdServer, pki: Pki, opts: dict[str, str]
) -> None:
    # no-ca-file: the server certificate is signed by the test CA, which the system's trust
    # store does not hold, so the client must refuse the server.
    reg = registry(mtls_etcd, **{k: pki[v] for k, v in opts.items()})
    try:
        with pytest.raises(DatastoreUnavailable):
            reg.put(f"{reg.prefix}/config", CONFIG.encode())
        with pytest.raises(DatastoreUnavailable):
            reg.list_subnets()
    finally:
        reg.close()
    # the same server accepts the right certificate: the failure above was the certificate's
    good = registry(mtls_etcd, **client_cert(pki))
    try:
        put_config_and_acquire(good)
    finally:
        good.close()


def test_username_and_password_with_client_certificate(mtls_etcd: TlsEtcdServer, pki: Pki) -> None:
    enable_auth(mtls_etcd, pki)
    reg = registry(mtls_etcd, username="root", password="s3cret", **client_cert(pki))
    try:
        put_config_and_acquire(reg, etcd_ready=True)
    finally:
        reg.close()
    wrong = registry(mtls_etcd, username="root", password="wrong", **client_cert(pki))
    try:
        with pytest.raises(DatastoreUnavailable):
            wrong.list_subnets()
    finally:
        wrong.close()


def test_username_and_password_over_server_only_tls(tls_etcd: TlsEtcdServer, pki: Pki) -> None:
    enable_auth(tls_etcd, pki)  # the server accepts a client certificate, but does not demand one
    reg = registry(tls_etcd, username="root", password="s3cret", cafile=pki["ca.crt"])
    try:
        put_config_and_acquire(reg, etcd_ready=True)
    finally:
        reg.close()
