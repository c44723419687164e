"""Receive coalescing (GRO) of the frames a driver hands its kernel in one batch: consecutive
in-order TCP segments of one flow become one GSO frame, as Linux's netfront does with
``napi_gro_receive``.  The kernel's TCP then takes one packet, and sends one ACK, where it
would have taken several; a sender whose ACKs arrive that way sends larger TSO bursts.

Pure: header bytes and numbers in, a plan and patched headers out.  The rules are Linux's
(``inet_gro_receive``, ``ipv6_gro_receive``, ``tcp_gro_receive``): the same Ethernet header;
IPv4 without options or fragments, with the same addresses, TOS, TTL and DF, or IPv6 without
extension headers, with the same addresses, traffic class, flow label and hop limit; the same
ports, ACK number, window and TCP options byte for byte; ACK set and no SYN, RST, URG, FIN or
CWR; each segment starts where the one before ended; all but the last carry whole multiples
of the run's MSS.  One difference: Linux ends a run after a segment with PSH, because it
would otherwise hold the data waiting for more.  Here every segment of a batch is already in
hand, so nothing waits and PSH only sets PSH on the merged frame.

Only frames whose checksum a lower layer took care of (partial, or validated) may merge: the
merged frame goes to the kernel as checksum-partial, which the kernel trusts for local
delivery.  VLAN-tagged frames are passed through one by one.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .csum import IPPROTO_TCP, internet_checksum, pseudo_sum_v4, pseudo_sum_v6
from .frames import (
    ETH_P_IP,
    ETH_P_IPV6,
    IP_DF,
    IP_MF,
    IP_OFFMASK,
    TCP_ACK,
    TCP_CWR,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    TCP_URG,
)
from .skb import ETH_HLEN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, MAX_PACKET

_IP = ETH_HLEN  # the IP header: Ethernet carries it at once (no VLAN tag)
_TCP4 = ETH_HLEN + 20  # the TCP header after IPv4 without options
_TCP6 = ETH_HLEN + 40  # ... after IPv6 without extension headers
MAX_HEADER = _TCP6 + 60  # the longest headers seg_of reads
_REFUSE = TCP_SYN | TCP_RST | TCP_URG | TCP_FIN | TCP_CWR
_U32 = 0xFFFFFFFF
_H = struct.Struct("!H")
_I = struct.Struct("!I")

#: the most segments one merged frame takes (a 64 KiB frame of 1448-byte segments has 45)
MAX_SEGS = 64

#: a segment GRO may merge: (flow key, sequence number, header length, payload bytes,
#: gso_size or 0, PSH, TCP header offset, the skb GSO type a merged frame gets).  The key
#: holds every header byte that must match along a run.
Seg = tuple[bytes, int, int, int, int, bool, int, int]


def seg_of(head: memoryview, length: int, gso_size: int, gso_type: int = GSO_NONE) -> Seg | None:
    """What GRO needs of a ``length``-byte frame whose first bytes are ``head`` (its headers
    must all be in ``head``; a GSO frame says its ``gso_size`` and ``gso_type``), or None
    when the frame may not merge with any other."""
    if len(head) < _TCP4 + 20:
        return None
    ethertype = head[12] << 8 | head[13]
    if ethertype == ETH_P_IP and gso_type in (GSO_NONE, GSO_TCPV4):
        # IPv4 without options, TCP, not a fragment, its length the frame's (no padding)
        if (
            head[_IP] != 0x45
            or head[_IP + 9] != IPPROTO_TCP
            or _H.unpack_from(head, _IP + 2)[0] != length - _IP
        ):
            return None
        if _H.unpack_from(head, _IP + 6)[0] & (IP_MF | IP_OFFMASK):
            return None
        l4, merged_type = _TCP4, GSO_TCPV4
        ip_key = b"".join(
            (
                head[: _IP + 2],  # Ethernet header, version/IHL, TOS
                bytes((head[_IP + 6] & (IP_DF >> 8), head[_IP + 8])),  # DF, TTL
                head[_IP + 12 : l4 + 4],  # addresses, ports
            )
        )
    elif ethertype == ETH_P_IPV6 and gso_type in (GSO_NONE, GSO_TCPV6):
        # IPv6, TCP as the next header (no extension headers), its length the frame's
        if len(head) < _TCP6 + 20 or head[_IP] >> 4 != 6 or head[_IP + 6] != IPPROTO_TCP:
            return None
        if _H.unpack_from(head, _IP + 4)[0] != length - _TCP6:
            return None
        l4, merged_type = _TCP6, GSO_TCPV6
        # Ethernet header, version, traffic class, flow label; next header, hop limit,
        # addresses, ports
        ip_key = b"".join((head[: _IP + 4], head[_IP + 6 : l4 + 4]))
    else:
        return None
    hlen = l4 + (head[l4 + 12] >> 4) * 4
    flags = head[l4 + 13]
    if hlen < l4 + 20 or hlen > len(head) or hlen >= length or flags & _REFUSE or not flags & TCP_ACK:
        return None
    key = b"".join(
        (
            ip_key,
            head[l4 + 8 : l4 + 12],  # ACK number
            bytes((head[l4 + 12], flags & ~TCP_PSH & 0xFF)),  # data offset, flags but PSH
            head[l4 + 14 : l4 + 16],  # window
            head[l4 + 20 : hlen],  # options
        )
    )
    seq = _I.unpack_from(head, l4 + 4)[0]
    return key, seq, hlen, length - hlen, gso_size, bool(flags & TCP_PSH), l4, merged_type


def plan(segs: Sequence[Seg | None], max_len: int = MAX_PACKET) -> list[int]:
    """How many frames each merged frame takes, in order (the counts add up to ``len(segs)``;
    1 is a frame passed as it is).  A merged frame is at most ``max_len`` bytes."""
    runs: list[int] = []
    i, n = 0, len(segs)
    while i < n:
        a = segs[i]
        k = 1
        if a is not None:
            key, seq, hlen, payload, gso = a[:5]
            mss = gso or payload
            total = hlen + payload
            end = (seq + payload) & _U32
            whole = payload % mss == 0  # a short tail ends the run
            while whole and i + k < n and k < MAX_SEGS:
                b = segs[i + k]
                if b is None or b[0] != key or b[1] != end or total + b[3] > max_len:
                    break
                if b[4] != mss if b[4] else b[3] > mss:
                    break  # another MSS: it would resegment differently
                total += b[3]
                end = (end + b[3]) & _U32
                whole = b[3] % mss == 0
                k += 1
        runs.append(k)
        i += k
    return runs


def merged_header(head: memoryview, seg: Seg, payload: int, psh: bool) -> bytearray:
    """``seg``'s headers (the first of a run; ``head`` its bytes), rewritten for a merged frame
    of ``payload`` bytes after them: the IP length (and IPv4's header checksum), PSH when any
    segment had it, and the TCP checksum field holding the pseudo-header sum
    (checksum-partial, as GSO requires)."""
    hlen, l4 = seg[2], seg[6]
    out = bytearray(head[:hlen])
    l4_len = hlen - l4 + payload
    if l4 == _TCP4:
        _H.pack_into(out, _IP + 2, l4 - _IP + l4_len)
        _H.pack_into(out, _IP + 10, 0)
        _H.pack_into(out, _IP + 10, internet_checksum(out[_IP:l4]))
        pseudo = pseudo_sum_v4(out[_IP + 12 : _IP + 16], out[_IP + 16 : l4], IPPROTO_TCP, l4_len)
    else:
        _H.pack_into(out, _IP + 4, l4_len)
        pseudo = pseudo_sum_v6(out[_IP + 8 : _IP + 24], out[_IP + 24 : l4], IPPROTO_TCP, l4_len)
    if psh:
        out[l4 + 13] |= TCP_PSH
    _H.pack_into(out, l4 + 16, pseudo)
    return out
