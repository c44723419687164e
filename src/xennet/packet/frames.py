"""Real Ethernet + IPv4/IPv6 + TCP/UDP frames as bytes, and the header walk GSO and netback's
header pull need.

Deliberately narrow: IPv4 without options and unfragmented, IPv6 without extension headers,
TCP or UDP, optionally one 802.1Q tag.  Anything else is refused with a ``FrameError`` that
says what was found, rather than guessed at.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .csum import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_CSUM_OFFSET,
    UDP_CSUM_OFFSET,
    BytesLike,
    CsumError,
    ipv4_header_checksum,
    l4_checksum,
    ones_sum,
    ones_sum_chunks,
    pseudo_sum_v4,
    pseudo_sum_v6,
)
from .skb import ETH_HLEN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, MAX_PACKET, Csum, PageSource, Piece, Skb, build_skb
from .skb import linear_layout as _linear_layout

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
VLAN_HLEN = 4
IPV4_HLEN = 20
IPV6_HLEN = 40
TCP_HLEN = 20
UDP_HLEN = 8
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFMASK = 0x1FFF

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_ECE = 0x40
TCP_CWR = 0x80
_FLAG_LETTERS = {"F": TCP_FIN, "S": TCP_SYN, "R": TCP_RST, "P": TCP_PSH, "A": TCP_ACK, "U": TCP_URG}
_FLAG_LETTERS |= {"E": TCP_ECE, "C": TCP_CWR}

# the most header bytes parse_l3l4 can need: eth + vlan + IPv6 + TCP with 40 bytes of options
MAX_HEADER_LEN = ETH_HLEN + VLAN_HLEN + IPV6_HLEN + 60


class FrameError(ValueError):
    """A frame this module cannot build or parse; the message says what was found."""


@dataclass(frozen=True)
class Headers:
    """Where the headers of a frame are.  Offsets are from the start of the frame."""

    l3_off: int  # == Ethernet header length (14, or 18 with a VLAN tag)
    ethertype: int
    ip_version: int
    ip_hlen: int
    l4_proto: int
    l4_hlen: int
    l4_len: int  # L4 header + payload, from the IP length field
    src_ip: bytes
    dst_ip: bytes

    @property
    def eth_hlen(self) -> int:
        return self.l3_off

    @property
    def l4_off(self) -> int:
        return self.l3_off + self.ip_hlen

    @property
    def payload_off(self) -> int:
        return self.l4_off + self.l4_hlen

    @property
    def payload_len(self) -> int:
        return self.l4_len - self.l4_hlen

    @property
    def frame_len(self) -> int:
        """Frame length the IP header claims (a real frame may carry trailing Ethernet padding)."""
        return self.l4_off + self.l4_len

    @property
    def csum_offset(self) -> int:
        """Where the L4 checksum field is, from the L4 header (csum_offset in skb terms)."""
        return TCP_CSUM_OFFSET if self.l4_proto == IPPROTO_TCP else UDP_CSUM_OFFSET

    def pseudo_sum(self, frame: BytesLike | None = None, l4_len: int | None = None) -> int:
        """One's complement sum of this frame's pseudo header, for ``l4_len`` L4 bytes."""
        n = self.l4_len if l4_len is None else l4_len
        f = pseudo_sum_v4 if self.ip_version == 4 else pseudo_sum_v6
        return f(self.src_ip, self.dst_ip, self.l4_proto, n)


def parse_l3l4(frame: BytesLike, *, headers_only: bool = False) -> Headers:
    """Walk Ethernet, IP and TCP/UDP headers.  With ``headers_only`` the frame may stop after
    the L4 header (netback pulls headers before it has the payload); otherwise the IP length
    must fit inside it."""
    mv = memoryview(frame)
    n = len(mv)

    def need(upto: int, what: str) -> None:
        if n < upto:
            raise FrameError(f"frame of {n} bytes is too short for the {what} (needs {upto})")

    need(ETH_HLEN, "Ethernet header")
    l3 = ETH_HLEN
    (ethertype,) = struct.unpack_from("!H", mv, 12)
    if ethertype == ETH_P_8021Q:
        need(ETH_HLEN + VLAN_HLEN, "VLAN tag")
        (ethertype,) = struct.unpack_from("!H", mv, 16)
        l3 += VLAN_HLEN
    if ethertype == ETH_P_IP:
        need(l3 + IPV4_HLEN, "IPv4 header")
        vihl, tot_len, frag, proto = struct.unpack_from("!BxHxxHxB", mv, l3)
        if vihl >> 4 != 4:
            raise FrameError(f"ethertype IPv4 but IP version {vihl >> 4}")
        ihl = (vihl & 0xF) * 4
        if ihl != IPV4_HLEN:
            raise FrameError(f"IPv4 header of {ihl} bytes: IP options are not supported")
        if frag & (IP_MF | IP_OFFMASK):
            raise FrameError("IPv4 fragment: no L4 header to parse")
        if tot_len < ihl:
            raise FrameError(f"IPv4 total length {tot_len} is shorter than its header")
        version, ip_hlen, l4_len = 4, ihl, tot_len - ihl
        src, dst = bytes(mv[l3 + 12 : l3 + 16]), bytes(mv[l3 + 16 : l3 + 20])
    elif ethertype == ETH_P_IPV6:
        need(l3 + IPV6_HLEN, "IPv6 header")
        vtf, plen, proto = struct.unpack_from("!IHB", mv, l3)
        if vtf >> 28 != 6:
            raise FrameError(f"ethertype IPv6 but IP version {vtf >> 28}")
        version, ip_hlen, l4_len = 6, IPV6_HLEN, plen
        src, dst = bytes(mv[l3 + 8 : l3 + 24]), bytes(mv[l3 + 24 : l3 + 40])
    else:
        raise FrameError(f"ethertype {ethertype:#06x}: only IPv4 and IPv6 are supported")
    l4 = l3 + ip_hlen
    if proto == IPPROTO_TCP:
        need(l4 + TCP_HLEN, "TCP header")
        l4_hlen = (mv[l4 + 12] >> 4) * 4
        if l4_hlen < TCP_HLEN:
            raise FrameError(f"TCP data offset {l4_hlen} bytes is shorter than a TCP header")
    elif proto == IPPROTO_UDP:
        l4_hlen = UDP_HLEN
    else:
        what = "extension headers are" if version == 6 else "it is"
        raise FrameError(f"IPv{version} next protocol {proto}: only TCP and UDP ({what} not supported)")
    if l4_len < l4_hlen:
        raise FrameError(f"IP says {l4_len} L4 bytes, less than the {l4_hlen}-byte L4 header")
    need(l4 + l4_hlen, "L4 header")
    if not headers_only:
        need(l4 + l4_len, "length the IP header claims")
    return Headers(l3, ethertype, version, ip_hlen, proto, l4_hlen, l4_len, src, dst)


@dataclass(frozen=True)
class BuiltFrame:
    data: bytes
    headers: Headers
    csum: Csum  # NONE: every checksum is final; PARTIAL: the L4 field holds the pseudo sum
    csum_start: int  # PARTIAL only (else 0): where the L4 header starts
    csum_offset: int  # PARTIAL only (else 0): checksum field, from csum_start


Mac = bytes | str
Flags = int | str


def _mac(m: Mac) -> bytes:
    b = bytes.fromhex(m.replace(":", "").replace("-", "")) if isinstance(m, str) else bytes(m)
    if len(b) != 6:
        raise FrameError(f"MAC address {m!r} is not 6 bytes")
    return b


def _ip(a: str | bytes | None, version: int, default: str) -> bytes:
    if isinstance(a, bytes):
        addr = ipaddress.ip_address(a)
    else:
        try:
            addr = ipaddress.ip_address(a if a is not None else default)
        except ValueError as e:
            raise FrameError(str(e)) from None
    if addr.version != version:
        raise FrameError(f"{addr} is not an IPv{version} address")
    return addr.packed


def tcp_flags(flags: Flags) -> int:
    """Flags as an int, from an int or scapy-style letters ("FSRPAUEC")."""
    if isinstance(flags, int):
        if not 0 <= flags <= 0xFF:
            raise FrameError(f"TCP flags {flags:#x} out of range")
        return flags
    out = 0
    for ch in flags:
        if ch not in _FLAG_LETTERS:
            raise FrameError(f"TCP flag letter {ch!r}: use F S R P A U E C")
        out |= _FLAG_LETTERS[ch]
    return out


def build_frame(
    *,
    ip: int = 4,  # 4 or 6 (checked: callers pass values from configuration)
    proto: str = "tcp",  # "tcp" or "udp"
    payload: bytes = b"",
    src_mac: Mac = "02:00:00:00:00:01",
    dst_mac: Mac = "02:00:00:00:00:02",
    src_ip: str | bytes | None = None,
    dst_ip: str | bytes | None = None,
    sport: int = 40000,
    dport: int = 5001,
    seq: int = 0,
    ack: int = 0,
    flags: Flags = TCP_ACK | TCP_PSH,
    window: int = 65535,
    tcp_options: bytes = b"",
    ip_id: int = 0,
    ttl: int = 64,
    df: bool = True,
    csum: str = "full",  # "full" or "partial"
) -> BuiltFrame:
    """An Ethernet frame carrying ``payload`` in TCP or UDP over IPv4 or IPv6.

    ``csum="partial"`` leaves the L4 checksum as Linux's CHECKSUM_PARTIAL does (the pseudo
    header sum in the field) and reports csum_start/csum_offset; the IPv4 header checksum is
    always final."""
    if ip not in (4, 6):
        raise FrameError(f"ip={ip!r}: want 4 or 6")
    if proto not in ("tcp", "udp"):
        raise FrameError(f"proto={proto!r}: want 'tcp' or 'udp'")
    if csum not in ("full", "partial"):
        raise FrameError(f"csum={csum!r}: want 'full' or 'partial'")
    src = _ip(src_ip, ip, "10.0.0.1" if ip == 4 else "fd00::1")
    dst = _ip(dst_ip, ip, "10.0.0.2" if ip == 4 else "fd00::2")
    pnum = IPPROTO_TCP if proto == "tcp" else IPPROTO_UDP
    try:
        if proto == "tcp":
            if len(tcp_options) > 40:
                raise FrameError(f"{len(tcp_options)} bytes of TCP options: at most 40")
            opts = tcp_options + bytes(-len(tcp_options) % 4)  # pad with EOL to a 4-byte multiple
            hlen = TCP_HLEN + len(opts)
            l4h = (
                struct.pack(
                    "!HHIIHHHH",
                    sport,
                    dport,
                    seq & 0xFFFFFFFF,
                    ack & 0xFFFFFFFF,
                    (hlen // 4) << 12 | tcp_flags(flags),
                    window,
                    0,
                    0,
                )
                + opts
            )
        else:
            l4h = struct.pack("!HHHH", sport, dport, UDP_HLEN + len(payload), 0)
    except struct.error as e:
        raise FrameError(f"{proto} header field out of range ({e})") from None
    l4_len = len(l4h) + len(payload)
    ip_hlen = IPV4_HLEN if ip == 4 else IPV6_HLEN
    total = ETH_HLEN + ip_hlen + l4_len
    if total > MAX_PACKET or (proto == "udp" and l4_len > 0xFFFF):
        raise FrameError(f"frame of {total} bytes: at most {MAX_PACKET}")
    if ip == 4:
        l3 = bytearray(
            struct.pack(
                "!BBHHHBBH4s4s",
                0x45,
                0,
                ip_hlen + l4_len,
                ip_id & 0xFFFF,
                IP_DF if df else 0,
                ttl,
                pnum,
                0,
                src,
                dst,
            )
        )
        struct.pack_into("!H", l3, 10, ipv4_header_checksum(l3))
        pseudo = pseudo_sum_v4(src, dst, pnum, l4_len)
        ethertype = ETH_P_IP
    else:
        l3 = bytearray(struct.pack("!IHBB16s16s", 6 << 28, l4_len, pnum, ttl, src, dst))
        pseudo = pseudo_sum_v6(src, dst, pnum, l4_len)
        ethertype = ETH_P_IPV6
    l4 = bytearray(l4h)
    off = TCP_CSUM_OFFSET if proto == "tcp" else UDP_CSUM_OFFSET
    value = pseudo if csum == "partial" else l4_checksum(pseudo, [l4, payload], pnum)
    struct.pack_into("!H", l4, off, value)
    data = _mac(dst_mac) + _mac(src_mac) + struct.pack("!H", ethertype) + bytes(l3) + bytes(l4) + payload
    headers = Headers(ETH_HLEN, ethertype, ip, ip_hlen, pnum, len(l4h), l4_len, src, dst)
    if csum == "partial":
        return BuiltFrame(data, headers, Csum.PARTIAL, headers.l4_off, off)
    return BuiltFrame(data, headers, Csum.NONE, 0, 0)


def frame_skb(
    frame: BuiltFrame,
    source: PageSource,
    layout: Sequence[Piece] | None = None,
    *,
    gso_size: int = 0,
) -> Skb:
    """Place a built frame into an skb with ``layout`` (default: a head page then 4 KiB frags),
    carrying its checksum state and, when ``gso_size`` is set, a TCP GSO type."""
    skb = build_skb(frame.data, layout if layout is not None else _linear_layout(len(frame.data)), source)
    skb.csum, skb.csum_start, skb.csum_offset = frame.csum, frame.csum_start, frame.csum_offset
    if gso_size:
        if frame.headers.l4_proto != IPPROTO_TCP:
            skb.free(source)
            raise FrameError("GSO needs a TCP frame (the protocol offers TCPv4/TCPv6 only)")
        skb.gso_size = gso_size
        skb.gso_type = GSO_TCPV4 if frame.headers.ip_version == 4 else GSO_TCPV6
    else:
        skb.gso_type = GSO_NONE
    return skb


# -- checking a frame's checksums (what csum_setup leaves, what a port receives) --


def verify_ipv4_header(frame: BytesLike) -> bool:
    """True when the frame's IPv4 header checksum is right (sum over the header == 0xFFFF)."""
    h = parse_l3l4(frame, headers_only=True)
    if h.ip_version != 4:
        raise CsumError("not an IPv4 frame")
    return ones_sum(bytes(frame[h.l3_off : h.l4_off])) == 0xFFFF


def verify_l4(frame: BytesLike) -> bool:
    """True when the TCP/UDP checksum is right (a UDP/IPv4 checksum of 0 means "none": True)."""
    h = parse_l3l4(frame)
    mv = memoryview(frame)
    seg = mv[h.l4_off : h.l4_off + h.l4_len]
    if h.l4_proto == IPPROTO_UDP and h.ip_version == 4 and bytes(seg[6:8]) == b"\0\0":
        return True
    pseudo = h.pseudo_sum(frame)
    return ones_sum_chunks([seg], pseudo) == 0xFFFF


def verify(frame: BytesLike) -> bool:
    """Every checksum of an Ethernet/IP/TCP-or-UDP frame is right."""
    if parse_l3l4(frame).ip_version == 4 and not verify_ipv4_header(frame):
        return False
    return verify_l4(frame)
