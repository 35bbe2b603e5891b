"""pyroute2's own requests and dumps for the per-peer objects: the reference `backend.nlbulk` is
checked against (same bytes on the wire, same tables read back)."""

from __future__ import annotations

import errno
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from backend.netlink import (
    MAIN_TABLE,
    NTF_SELF,
    NUD_PERMANENT,
    RTNH_F_ONLINK,
    RTPROT_BOOT,
    family_of,
)


def replace_neigh(ipr: IPRoute, index: int, ip: str, mac: str) -> None:
    """`ip neigh replace IP lladdr MAC dev INDEX nud permanent`."""
    ipr.neigh(
        "replace", ifindex=index, dst=ip, lladdr=mac, state=NUD_PERMANENT, family=family_of(ip)
    )


def delete_neigh(ipr: IPRoute, index: int, ip: str) -> None:
    """Delete a neighbour entry; an entry already gone is not an error."""
    _ignore_missing(ipr.neigh, "del", ifindex=index, dst=ip, family=family_of(ip))


def replace_fdb(ipr: IPRoute, index: int, mac: str, dst: str) -> None:
    """`bridge fdb replace MAC dev INDEX dst DST self permanent`."""
    ipr.fdb("replace", ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT, flags=NTF_SELF)


def delete_fdb(ipr: IPRoute, index: int, mac: str, dst: str) -> None:
    """Delete an FDB entry; an entry already gone is not an error."""
    _ignore_missing(ipr.fdb, "del", ifindex=index, lladdr=mac, dst=dst)


def replace_route(ipr: IPRoute, index: int, dst: str, gateway: str) -> None:
    """`ip route replace DST via GATEWAY dev INDEX onlink` in the main table."""
    ipr.route(
        "replace",
        dst=dst,
        gateway=gateway,
        oif=index,
        flags=RTNH_F_ONLINK,
        table=MAIN_TABLE,
        proto=RTPROT_BOOT,
        family=family_of(dst),
    )


def delete_route(ipr: IPRoute, index: int, dst: str) -> None:
    """Delete the route to `dst` through the link; a route already gone is not an error."""
    _ignore_missing(ipr.route, "del", dst=dst, oif=index, table=MAIN_TABLE, family=family_of(dst))


def _ignore_missing(call: Any, *args: Any, **kwargs: Any) -> None:
    try:
        call(*args, **kwargs)
    except NetlinkError as err:
        if err.code not in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
            raise


# --- dumps ---------------------------------------------------------------------------------------


def dump_neighs(ipr: IPRoute, index: int, family: int) -> dict[str, str]:
    """Permanent neighbour entries on the link: {IP: MAC}."""
    return {
        m.get("NDA_DST"): (m.get("NDA_LLADDR") or "").lower()
        for m in ipr.neigh("dump", ifindex=index, family=family)
        if m["ifindex"] == index and m["state"] & NUD_PERMANENT and m.get("NDA_DST")
    }


def dump_fdb(ipr: IPRoute, index: int, family: int) -> set[tuple[str, str]]:
    """Permanent FDB entries of the link whose remote is of `family`: {(MAC, remote IP)}."""
    out = set()
    for m in ipr.fdb("dump", ifindex=index):
        dst = m.get("NDA_DST")
        if m["ifindex"] != index or not dst or not m["state"] & NUD_PERMANENT:
            continue
        if family_of(dst) == family:
            out.add(((m.get("NDA_LLADDR") or "").lower(), dst))
    return out


def dump_routes(ipr: IPRoute, index: int, family: int) -> dict[str, str | None]:
    """Routes through the link in the main table, but the kernel's own (proto kernel):
    {"dst/len": gateway or None}."""
    out: dict[str, str | None] = {}
    for m in ipr.route("dump", oif=index, table=MAIN_TABLE, family=family):
        if m.get("RTA_OIF") != index or not m.get("RTA_DST") or m["proto"] == 2:
            continue
        out[f"{m.get('RTA_DST')}/{m['dst_len']}"] = m.get("RTA_GATEWAY")
    return out
