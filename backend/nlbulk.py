"""The bulk netlink path for the per-peer objects: many requests per system call, every ack read.

pyroute2's generic message encoder costs about a quarter of a millisecond per request, which makes
15,000 kernel objects (5,000 peers) take seconds. The three per-peer requests have fixed shapes, so
this module packs them directly with `struct`, sends them in windows of many messages per
`send()`, and then reads one acknowledgement per request (NLM_F_ACK), attributing each error to
its request by sequence number. It also reads the three tables back (dump requests) with a
decoder limited to the attributes flanneld-py needs. Links, addresses and everything else stay
with pyroute2 (`backend.netlink`).

Message layouts written (Linux uapi `linux/netlink.h`, `linux/rtnetlink.h`,
`linux/neighbour.h`; all fields in host byte order, each attribute padded to 4 bytes):

    nlmsghdr  len u32 | type u16 | flags u16 | seq u32 | pid u32                        16 bytes
    ndmsg     family u8 | pad u8 u16 | ifindex i32 | state u16 | flags u8 | type u8     12 bytes
    rtmsg     family u8 | dst_len u8 | src_len u8 | tos u8 | table u8 | protocol u8 |
              scope u8 | type u8 | flags u32                                           12 bytes
    rtattr    len u16 | type u16 | value (padded)                              4 bytes + value

    neighbour replace  RTM_NEWNEIGH, REQUEST|ACK|CREATE|REPLACE; ndmsg(family of the IP,
                       ifindex, state PERMANENT); NDA_DST ip, NDA_LLADDR mac
    neighbour delete   RTM_DELNEIGH, REQUEST|ACK; ndmsg(family, ifindex, PERMANENT); NDA_DST
    FDB replace        RTM_NEWNEIGH, REQUEST|ACK|CREATE|REPLACE; ndmsg(AF_BRIDGE, ifindex,
                       PERMANENT, flags SELF); NDA_LLADDR mac, NDA_DST remote IP
    FDB delete         RTM_DELNEIGH, REQUEST|ACK; ndmsg(AF_BRIDGE, ifindex, NOARP|PERMANENT,
                       flags SELF);
                       NDA_LLADDR, NDA_DST, and for an entry of a non-default UDP port or VNI
                       NDA_PORT u16 (network byte order), NDA_VNI u32
    route replace      RTM_NEWROUTE, REQUEST|ACK|CREATE|REPLACE; rtmsg(family, prefix length,
                       table main, protocol boot, scope universe, type unicast, flags ONLINK);
                       RTA_DST, RTA_GATEWAY, RTA_OIF, RTA_TABLE
    route delete       RTM_DELROUTE, REQUEST|ACK; rtmsg(family, prefix length, table main);
                       RTA_DST, RTA_OIF, RTA_TABLE
    gateway route      as route replace/delete without the ONLINK flag, with RTA_GATEWAY also
                       in the delete, and RTA_OIF only when a link is given (host-gw routes and
                       DirectRouting routes: `ip route replace 10.244.2.0/24 via 198.18.0.2
                       [dev eth0]`)

These are the bytes pyroute2 sends for the same `IPRoute.neigh/fdb/route` calls (the tests compare
them byte for byte) and what `ip neigh/route replace ... onlink` and `bridge fdb replace ... self
permanent` mean.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
import struct
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass

AF_BRIDGE = 7
NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_CAP_ACK = 10
SO_RCVBUFFORCE = 33

NLMSG_ERROR = 2
NLMSG_DONE = 3
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # in acknowledgements
NLMSGERR_ATTR_MSG = 1

NDA_DST, NDA_LLADDR, NDA_CACHEINFO, NDA_PORT, NDA_VNI = 1, 2, 3, 6, 7
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15
RTA_VIA = 18
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NTF_SELF = 0x02
RTN_UNICAST = 1
RTNH_F_ONLINK = 4
RT_TABLE_MAIN = 254
RT_TABLE_COMPAT = 252  # rtm_table of a table above 255 (the id is in RTA_TABLE)
RTPROT_BOOT = 3
RTPROT_KERNEL = 2  # a route the kernel made for an address (IPv6: `<addr>/128` on flannel-v6.N)

_HDR = struct.Struct("=IHHII")
_NDMSG = struct.Struct("=BxxxiHBB")
_RTMSG = struct.Struct("=BBBBBBBBI")
_ATTR = struct.Struct("=HH")
_U32_ATTR = struct.Struct("=HHI")
_ERR = struct.Struct("=i")
_SEQ = _U32 = struct.Struct("=I")
_MAC_HDR = _ATTR.pack(10, NDA_LLADDR)  # a 6-byte NDA_LLADDR attribute
_ZERO_MAC = bytes(6)
_TABLE_HDR, _OIF_HDR = _ATTR.pack(8, RTA_TABLE), _ATTR.pack(8, RTA_OIF)
_DST4_HDR, _GW4_HDR = _ATTR.pack(8, RTA_DST), _ATTR.pack(8, RTA_GATEWAY)

_REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
_DELETE = NLM_F_REQUEST | NLM_F_ACK


def _addr(ip: str) -> tuple[int, bytes]:
    """(address family, packed address) of an IPv4 or IPv6 address string."""
    if ":" in ip:
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip)
    return socket.AF_INET, socket.inet_aton(ip)


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def _attr(kind: int, value: bytes) -> bytes:
    """One rtattr with its value, padded to 4 bytes (values here are 4, 6 or 16 bytes long)."""
    pad = -len(value) % 4
    return _ATTR.pack(4 + len(value), kind) + value + b"\0" * pad


def _message(kind: int, flags: int, body: bytes, seq: int = 0) -> bytes:
    """A netlink message: header (port ID 0: the kernel) and `body`."""
    return _HDR.pack(16 + len(body), kind, flags, seq, 0) + body


def neigh_request(action: str, index: int, ip: str, mac: str | None) -> bytes:
    """The RTM_NEWNEIGH ("replace") or RTM_DELNEIGH ("delete") message for a permanent
    neighbour entry `ip` -> `mac` (colon hex; ignored for "delete") on link `index`, with
    sequence number and port ID 0 (`BulkSocket.execute` numbers them). Raises OSError for an
    IP that is not an address."""
    family, dst = _addr(ip)
    if action == "replace":
        body = _NDMSG.pack(family, index, NUD_PERMANENT, 0, 0)
        body += _attr(NDA_DST, dst) + _attr(NDA_LLADDR, _mac(mac or ""))
        return _message(RTM_NEWNEIGH, _REPLACE, body)
    body = _NDMSG.pack(family, index, NUD_PERMANENT, 0, 0) + _attr(NDA_DST, dst)
    return _message(RTM_DELNEIGH, _DELETE, body)


def fdb_request(action: str, index: int, mac: str, remote: str) -> bytes:
    """The RTM_NEWNEIGH/RTM_DELNEIGH message (family AF_BRIDGE) for the FDB entry `mac` ->
    `remote` on the VXLAN link `index`; sequence number 0.

    `remote` is the peer's public IP, or as `dump_fdb` lists an entry of a non-default UDP port
    or VNI, `"<IP> port <N> vni <M>"` (either part optional, as `bridge fdb` writes them): the
    kernel deletes only the entry whose port and VNI match the request, and takes an absent
    one for the device's own. Raises OSError for a remote that is not an address, ValueError
    for a MAC that is not hex or a malformed port/VNI suffix."""
    ip, *extra = remote.split(" ")
    _, dst = _addr(ip)
    attrs = _attr(NDA_LLADDR, _mac(mac)) + _attr(NDA_DST, dst)
    options = dict(zip(extra[::2], extra[1::2], strict=True))
    if options.keys() - {"port", "vni"}:
        raise ValueError(f"FDB remote {remote!r}: only 'port N' and 'vni N' may follow the IP")
    if "port" in options:
        attrs += _attr(NDA_PORT, struct.pack("!H", int(options["port"])))
    if "vni" in options:
        attrs += _attr(NDA_VNI, _U32.pack(int(options["vni"])))
    if action == "replace":
        body = _NDMSG.pack(AF_BRIDGE, index, NUD_PERMANENT, NTF_SELF, 0) + attrs
        return _message(RTM_NEWNEIGH, _REPLACE, body)
    body = _NDMSG.pack(AF_BRIDGE, index, NUD_NOARP | NUD_PERMANENT, NTF_SELF, 0) + attrs
    return _message(RTM_DELNEIGH, _DELETE, body)


def route_request(action: str, index: int, dst: str, gateway: str | None) -> bytes:
    """The RTM_NEWROUTE ("replace": `dst` via `gateway` onlink, main table, protocol boot) or
    RTM_DELROUTE ("delete") message for the route to `dst` (CIDR text) through link `index`;
    sequence number 0. Raises OSError for an address that is not one."""
    net, _, plen = dst.partition("/")
    family, packed = _addr(net)
    prefix = int(plen) if plen else len(packed) * 8
    table = _U32_ATTR.pack(8, RTA_TABLE, RT_TABLE_MAIN)
    oif = _U32_ATTR.pack(8, RTA_OIF, index)
    if action == "replace":
        _, gw = _addr(gateway or "")
        head = _RTMSG.pack(
            family, prefix, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST, RTNH_F_ONLINK
        )
        body = head + _attr(RTA_DST, packed) + _attr(RTA_GATEWAY, gw) + oif + table
        return _message(RTM_NEWROUTE, _REPLACE, body)
    head = _RTMSG.pack(family, prefix, 0, 0, RT_TABLE_MAIN, 0, 0, 0, 0)
    return _message(RTM_DELROUTE, _DELETE, head + _attr(RTA_DST, packed) + oif + table)


def gateway_route_request(action: str, dst: str, gateway: str, index: int = 0) -> bytes:
    """The RTM_NEWROUTE ("replace") or RTM_DELROUTE ("delete") message for the route `dst` (CIDR
    text) via `gateway`, main table, protocol boot, scope universe, not onlink; through link
    `index`, or with 0 through the link the kernel finds for the gateway (a replace) or any link
    (a delete, which then matches the gateway). Sequence number 0. Raises OSError for an address
    that is not one."""
    net, _, plen = dst.partition("/")
    family, packed = _addr(net)
    prefix = int(plen) if plen else len(packed) * 8
    _, gw = _addr(gateway)
    attrs = _attr(RTA_DST, packed) + _attr(RTA_GATEWAY, gw)
    if index:
        attrs += _U32_ATTR.pack(8, RTA_OIF, index)
    attrs += _U32_ATTR.pack(8, RTA_TABLE, RT_TABLE_MAIN)
    if action == "replace":
        head = _RTMSG.pack(family, prefix, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST, 0)
        return _message(RTM_NEWROUTE, _REPLACE, head + attrs)
    head = _RTMSG.pack(family, prefix, 0, 0, RT_TABLE_MAIN, 0, 0, 0, 0)
    return _message(RTM_DELROUTE, _DELETE, head + attrs)


@dataclass(frozen=True)
class Request:
    """One write: its encoded message (sequence number 0, set when sent) and whether a "not
    found" answer counts as success (deletes: the object is already gone)."""

    message: bytes
    missing_ok: bool = False


_MISSING = (errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL)


class BulkSocket:
    """A NETLINK_ROUTE socket of the current network namespace, for bulk writes and dumps.

    Not thread-safe: one owner (the device's reconciler). `window` is the number of requests
    sent before their acknowledgements are read; it is capped by the receive buffer the kernel
    grants (each pending acknowledgement occupies about 1 KiB of it).
    """

    def __init__(self, window: int = 1024, rcvbuf: int = 4 << 20) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        for opt in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
            with contextlib.suppress(OSError):  # older kernels: larger acks, no error text
                self.sock.setsockopt(SOL_NETLINK, opt, 1)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        granted = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.window = max(16, min(window, granted // 2048))
        self.seq = 0
        self._buf = bytearray(64 << 10)  # a dump part is at most 32 KiB; an ack 36 bytes

    def close(self) -> None:
        """Close the netlink socket; the kernel objects written stay."""
        self.sock.close()

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        return self.seq

    def execute(self, requests: Sequence[Request]) -> list[str | None]:
        """Send every request and read every acknowledgement. Returns, per request in order,
        None on success or the kernel's error text ("No such device (ENODEV): …").

        A request whose acknowledgement never came (the socket reported lost messages) is
        reported as failed, never as done. Raises OSError when the socket itself fails.
        """
        results: list[str | None] = [None] * len(requests)
        for start in range(0, len(requests), self.window):
            chunk = requests[start : start + self.window]
            first = self._next_seq()
            self.seq = (first + len(chunk) - 1) & 0xFFFFFFFF
            buf = bytearray(b"".join(req.message for req in chunk))
            off = 0
            for i, req in enumerate(chunk):
                _SEQ.pack_into(buf, off + 8, (first + i) & 0xFFFFFFFF)
                off += len(req.message)
            self.sock.send(buf)
            pending = {(first + i) & 0xFFFFFFFF: start + i for i in range(len(chunk))}
            self._collect(pending, requests, results)
        return results

    def _collect(
        self, pending: dict[int, int], requests: Sequence[Request], results: list[str | None]
    ) -> None:
        """Read the acknowledgements of `pending` ({seq: request position}).

        The kernel handles a sent buffer before `send()` returns, so every acknowledgement is
        queued by now or was dropped (receive buffer full, reported once as ENOBUFS). The queue is
        read without blocking to its end, so that a later batch starts from an empty queue; what
        is still pending then was lost and is reported as failed.
        """
        lost = False
        waited = False
        while pending:
            try:
                n = self.sock.recv_into(self._buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if lost or waited:
                    break
                waited = True  # not expected; allow a slow kernel path one second
                select.select([self.sock], [], [], 1.0)
                continue
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise
                lost = True
                continue
            view = memoryview(self._buf)[:n]
            off = 0
            while off + 16 <= n:
                length, kind, flags, seq, _ = _HDR.unpack_from(view, off)
                if length < 16:
                    break
                if kind == NLMSG_ERROR and seq in pending:
                    pos = pending.pop(seq)
                    (code,) = _ERR.unpack_from(view, off + 16)
                    if code and not (requests[pos].missing_ok and -code in _MISSING):
                        results[pos] = _error_text(-code, view, off, length, flags)
                off += (length + 3) & ~3
        if lost:
            self._drain()
        for pos in pending.values():
            results[pos] = "acknowledgement lost (netlink receive buffer overrun)"

    def _drain(self) -> None:
        """Discard whatever is queued (stale acknowledgements of a batch given up on)."""
        while True:
            try:
                self.sock.recv_into(self._buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise

    # --- dumps -----------------------------------------------------------------------------------
    #
    # A resync pass reads every entry of the device. The kernel writes the attributes flanneld-py
    # needs first and in a fixed order (neighbour: NDA_DST, NDA_LLADDR; FDB: NDA_LLADDR, NDA_DST),
    # so a message with that layout is decoded from fixed offsets; any other goes through the
    # general attribute walk.

    def _dump(self, kind: int, body: bytes) -> Generator[bytes, None, None]:
        """Yield the body (after the netlink header) of every message of a dump.

        A dump given up half-way (an exception in the consumer) is read to its end, so that the
        kernel does not refuse the next dump with EBUSY. Raises OSError when the kernel refuses
        the dump.
        """
        seq = self._next_seq()
        self.sock.send(_message(kind, NLM_F_REQUEST | NLM_F_DUMP, body, seq))
        ended: list[bool] = []  # set by _dump_parts when the kernel's last part was read
        try:
            yield from self._dump_parts(seq, ended)
        finally:
            if not ended:  # the consumer gave up: read the rest
                for _ in self._dump_parts(seq, ended):
                    pass

    def _dump_parts(self, seq: int, ended: list[bool]) -> Iterator[bytes]:
        """The messages of dump `seq` until its end (NLMSG_DONE, or an error raised); appends to
        `ended` when the end was read."""
        buf = self._buf
        view = memoryview(buf)
        while True:
            n = self.sock.recv_into(buf)
            off = 0
            while off + 16 <= n:
                length, mtype, _, mseq, _ = _HDR.unpack_from(buf, off)
                if length < 16:
                    ended.append(True)  # a malformed part: nothing more can be read of it
                    return
                if mseq == seq:
                    if mtype in (NLMSG_DONE, NLMSG_ERROR):
                        ended.append(True)
                        (code,) = _ERR.unpack_from(buf, off + 16)
                        if mtype == NLMSG_ERROR and code:
                            raise OSError(-code, f"dump failed: {os.strerror(-code)}")
                        return
                    yield view[off + 16 : off + length].tobytes()
                off += (length + 3) & ~3

    def dump_neighs(self, index: int, family: int, within: Scope | None = None) -> dict[str, str]:
        """Permanent neighbour entries of link `index` for `family`: {IP: MAC (lowercase)};
        only those whose IP is inside `within` when given."""
        req = _NDMSG.pack(family, 0, 0, 0, 0) + _U32_ATTR.pack(8, 8, index)  # NDA_IFINDEX
        size = 4 if family == socket.AF_INET else 16
        dst_hdr = _ATTR.pack(4 + size, NDA_DST)
        mac_at = 12 + 4 + size
        out: dict[str, str] = {}
        for body in self._dump(RTM_GETNEIGH, req):
            fam, ifindex, state, _, _ = _NDMSG.unpack_from(body, 0)
            if ifindex != index or fam != family or not state & NUD_PERMANENT:
                continue
            if body[12:16] == dst_hdr and body[mac_at : mac_at + 4] == _MAC_HDR:
                dst: bytes | None = body[16:mac_at]
                mac: bytes | None = body[mac_at + 4 : mac_at + 10]
            else:
                attrs = _attrs(body, 12, len(body))
                dst, mac = attrs.get(NDA_DST), attrs.get(NDA_LLADDR)
            if dst is None or (within is not None and not within.holds(dst)):
                continue
            out[socket.inet_ntop(family, dst)] = mac.hex(":") if mac else ""
        return out

    def dump_fdb(self, index: int, family: int, unicast: bool = False) -> set[tuple[str, str]]:
        """Permanent FDB entries of link `index` whose remote is of `family`: {(MAC, remote)};
        without the all-zeros (flood) entries when `unicast`.

        The remote is the IP, followed by `" port <N>"` and/or `" vni <M>"` when the entry's
        UDP port or VNI differ from the device's (the kernel sends NDA_PORT/NDA_VNI only then):
        such an entry never equals one flanneld-py wants, so a resync removes it, and
        `fdb_request` turns the text back into the attributes its deletion needs."""
        # an ifinfomsg-sized header: the kernel filters an AF_BRIDGE dump by its ifindex
        req = struct.pack("=BxHiII", AF_BRIDGE, 0, index, 0, 0)
        size = 4 if family == socket.AF_INET else 16
        dst_hdr = _ATTR.pack(4 + size, NDA_DST)
        after = 28 + size  # where the attribute after a fixed-layout NDA_DST starts
        plain = (b"", _ATTR.pack(4 + 16, NDA_CACHEINFO))  # what may follow it: nothing else
        out: set[tuple[str, str]] = set()
        for body in self._dump(RTM_GETNEIGH, req):
            _, ifindex, state, _, _ = _NDMSG.unpack_from(body, 0)
            if ifindex != index or not state & NUD_PERMANENT:
                continue
            suffix = ""
            if (body[12:16] == _MAC_HDR and body[24:28] == dst_hdr
                    and body[after : after + 4] in plain):  # fmt: skip
                mac: bytes | None = body[16:22]
                dst: bytes | None = body[28:after]
            else:
                attrs = _attrs(body, 12, len(body))
                dst, mac = attrs.get(NDA_DST), attrs.get(NDA_LLADDR)
                port, vni = attrs.get(NDA_PORT), attrs.get(NDA_VNI)
                if port is not None and len(port) == 2:
                    suffix += f" port {struct.unpack('!H', port)[0]}"
                if vni is not None and len(vni) == 4:
                    suffix += f" vni {_U32.unpack(vni)[0]}"
            if dst is None or len(dst) != size or not mac or (unicast and mac == _ZERO_MAC):
                continue
            out.add((mac.hex(":"), socket.inet_ntop(family, dst) + suffix))
        return out

    def dump_routes(
        self, index: int, family: int, within: Scope | None = None
    ) -> dict[str, str | None]:
        """Main-table routes through link `index` for `family`: {"dst/len": gateway or None};
        only those inside `within` when given, and never the kernel's own (proto kernel). Of
        several routes to one prefix (other metrics) the one of the lowest metric, the kernel's
        default that flanneld-py writes, is listed."""
        out: dict[str, str | None] = {}
        metrics: dict[str, int] = {}
        for body in self._dump(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
            if body[0] != family or body[4] not in (RT_TABLE_MAIN, RT_TABLE_COMPAT):
                continue  # the local table and others: never ours
            if body[5] == RTPROT_KERNEL:
                continue  # the prefix route of an address on the device: the kernel's
            if (
                len(body) == 44
                and body[12:16] == _TABLE_HDR
                and body[20:24] == _DST4_HDR
                and body[28:32] == _GW4_HDR
                and body[36:40] == _OIF_HDR
            ):
                # RTA_TABLE, RTA_DST, RTA_GATEWAY, RTA_OIF: an IPv4 route as the kernel sends ours
                (oif,) = _U32.unpack_from(body, 40)
                if oif != index or _U32.unpack_from(body, 16)[0] != RT_TABLE_MAIN:
                    continue
                dst, gw, metric = body[24:28], body[32:36], 0
            else:
                attrs = _attrs(body, 12, len(body))
                tab = attrs.get(RTA_TABLE)
                if tab is not None and _U32.unpack(tab)[0] != RT_TABLE_MAIN:
                    continue
                oif_attr, dst_attr = attrs.get(RTA_OIF), attrs.get(RTA_DST)
                if oif_attr is None or _U32.unpack(oif_attr)[0] != index or dst_attr is None:
                    continue
                dst, gw = dst_attr, attrs.get(RTA_GATEWAY, b"")
                metric = _U32.unpack(attrs.get(RTA_PRIORITY, b"\0\0\0\0"))[0]
            if within is not None and not within.holds(dst, body[1]):
                continue
            prefix = f"{socket.inet_ntop(family, dst)}/{body[1]}"
            if metrics.get(prefix, metric + 1) <= metric:
                continue  # a route of a higher metric to the same prefix is not the one we wrote
            metrics[prefix] = metric
            out[prefix] = socket.inet_ntop(family, gw) if gw else None
        return out

    def lookup_route(self, ip: str) -> str | None:
        """The gateway of the route the kernel would use for `ip` (address text), like `ip
        route get`: the gateway's address, "" for an on-link route (no gateway; also a local
        address), "via" for a gateway of the other family; None when there is no route
        (unreachable, blackhole, prohibited: the kernel answers with an error). One request
        and its answer; raises OSError when the socket fails."""
        family, packed = _addr(ip)
        seq = self._next_seq()
        body = _RTMSG.pack(family, len(packed) * 8, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST, packed)
        self.sock.send(_message(RTM_GETROUTE, NLM_F_REQUEST, body, seq))
        buf = self._buf
        while True:
            n = self.sock.recv_into(buf)
            off = 0
            while off + 16 <= n:
                length, mtype, _, mseq, _ = _HDR.unpack_from(buf, off)
                if length < 16:
                    break
                if mseq == seq:
                    if mtype == NLMSG_ERROR:
                        return None
                    if mtype == RTM_NEWROUTE:
                        attrs = _attrs(memoryview(buf), off + 16 + _RTMSG.size, off + length)
                        gw = attrs.get(RTA_GATEWAY)
                        if gw:
                            return socket.inet_ntop(family, gw)
                        return "via" if RTA_VIA in attrs else ""
                off += (length + 3) & ~3

    def dump_gateway_routes(
        self, family: int, within: Scope, index: int = 0, exclude_index: int = 0
    ) -> dict[str, str]:
        """The main-table routes flanneld writes via peers' public IPs: unicast, protocol boot,
        destination inside `within`, with a gateway and without the onlink flag (which VXLAN's
        routes via a VTEP address have; the gateway, a public IP, may itself lie inside
        `within` when the cluster network holds the nodes' addresses); through link `index`
        when given, through any link but `exclude_index` when that is given. {"dst/len":
        gateway}; of several routes to one prefix the one of the lowest metric. Routes of other
        protocols (a routing daemon's, the kernel's own) and routes without a gateway are never
        listed, so never removed."""
        out: dict[str, str] = {}
        metrics: dict[str, int] = {}
        for body in self._dump(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)):
            if (
                body[0] != family
                or body[4] not in (RT_TABLE_MAIN, RT_TABLE_COMPAT)
                or body[5] != RTPROT_BOOT
                or body[7] != RTN_UNICAST
                or body[1] < within.prefixlen  # wider than the network: never a peer's
            ):
                continue
            attrs = _attrs(body, 12, len(body))
            tab = attrs.get(RTA_TABLE)
            if tab is not None and _U32.unpack(tab)[0] != RT_TABLE_MAIN:
                continue
            dst, gw, oif = attrs.get(RTA_DST), attrs.get(RTA_GATEWAY), attrs.get(RTA_OIF)
            if dst is None or not gw or not within.holds(dst, body[1]):
                continue
            if _U32.unpack_from(body, 8)[0] & RTNH_F_ONLINK:
                continue  # a VXLAN route via a VTEP address, not a route via a public IP
            link = _U32.unpack(oif)[0] if oif is not None else 0
            if (index and link != index) or (exclude_index and link == exclude_index):
                continue
            prefix = f"{socket.inet_ntop(family, dst)}/{body[1]}"
            metric = _U32.unpack(attrs.get(RTA_PRIORITY, b"\0\0\0\0"))[0]
            if metrics.get(prefix, metric + 1) <= metric:
                continue
            metrics[prefix] = metric
            out[prefix] = socket.inet_ntop(family, gw)
        return out


@dataclass(frozen=True)
class Scope:
    """An IP network as packed bounds, for filtering dumped entries without parsing addresses:
    `lo`..`hi` its first and last address (network byte order: as bytes of one length they
    compare like the numbers), `prefixlen` its prefix length."""

    lo: bytes
    hi: bytes
    prefixlen: int

    @classmethod
    def of(cls, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Scope:
        """The scope of `network`."""
        return cls(network.network_address.packed, network.broadcast_address.packed,
                   network.prefixlen)  # fmt: skip

    @classmethod
    def empty(cls) -> Scope:
        """A scope that holds nothing (a network of the other address family)."""
        return cls(b"\xff", b"\x00", 0)

    def holds(self, packed: bytes, prefixlen: int | None = None) -> bool:
        """Whether the address (packed, network order), or the network of that address and
        `prefixlen`, lies inside this one."""
        if prefixlen is not None and prefixlen < self.prefixlen:
            return False
        return len(packed) == len(self.lo) and self.lo <= packed <= self.hi


def _attrs(view: bytes | memoryview, off: int, end: int) -> dict[int, bytes]:
    """The attributes from `off` to `end`: {type: value bytes} (nested ones left encoded)."""
    out: dict[int, bytes] = {}
    while off + 4 <= end:
        alen, atype = _ATTR.unpack_from(view, off)
        if alen < 4:
            break
        out[atype & 0x3FFF] = bytes(view[off + 4 : off + alen])
        off += (alen + 3) & ~3
    return out


def _error_text(code: int, view: memoryview, off: int, length: int, flags: int) -> str:
    """The error of an acknowledgement: strerror, errno name, and the kernel's extended-ack
    message when it sent one."""
    text = f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    if flags & NLM_F_ACK_TLVS:
        inner_len = _HDR.unpack_from(view, off + 20)[0]
        start = off + 20 + (16 if flags & NLM_F_CAPPED else inner_len)
        msg = _attrs(view, (start + 3) & ~3, off + length).get(NLMSGERR_ATTR_MSG)
        if msg:
            text += ": " + msg.rstrip(b"\0").decode(errors="replace")
    return text
