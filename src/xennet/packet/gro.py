"""Receive coalescing (GRO) of the frames a driver hands its kernel in one batch: consecutive
in-order TCP/IPv4 segments of one flow become one GSO frame, as Linux's netfront does with
``napi_gro_receive``.  The kernel's TCP then takes one packet, and sends one ACK, where it
would have taken several; a sender whose ACKs arrive that way sends larger TSO bursts.

Pure: header bytes and numbers in, a plan and patched headers out.  The rules are Linux's
(``inet_gro_receive``, ``tcp_gro_receive``): the same Ethernet header, IPv4 without options
or fragments, the same addresses, TOS, TTL and DF; the same ports, ACK number, window and
TCP options byte for byte; ACK set and no SYN, RST, URG, FIN or CWR; each segment starts
where the one before ended; all but the last carry whole multiples of the run's MSS.  One
difference: Linux ends a run after a segment with PSH, because it would otherwise hold the
data waiting for more.  Here every segment of a batch is already in hand, so nothing waits
and PSH only sets PSH on the merged frame.

Only frames whose checksum a lower layer took care of (partial, or validated) may merge: the
merged frame goes to the kernel as checksum-partial, which the kernel trusts for local
delivery.  IPv6 and VLAN-tagged frames are passed through one by one.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .csum import IPPROTO_TCP, internet_checksum, pseudo_sum_v4
from .frames import IP_DF, IP_MF, IP_OFFMASK, TCP_ACK, TCP_CWR, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG
from .skb import ETH_HLEN, MAX_PACKET

_IP = ETH_HLEN  # the IPv4 header: Ethernet carries it at once (no VLAN tag)
_TCP = TCP_OFFSET = ETH_HLEN + 20  # the TCP header (csum_start): IPv4 without options
MAX_HEADER = _TCP + 60  # the longest headers seg_of reads
_REFUSE = TCP_SYN | TCP_RST | TCP_URG | TCP_FIN | TCP_CWR
_U32 = 0xFFFFFFFF
_H = struct.Struct("!H")
_I = struct.Struct("!I")

#: the most segments one merged frame takes (a 64 KiB frame of 1448-byte segments has 45)
MAX_SEGS = 64

#: a segment GRO may merge: (flow key, sequence number, header length, payload bytes,
#: gso_size or 0, PSH).  The key holds every header byte that must match along a run.
Seg = tuple[bytes, int, int, int, int, bool]


def seg_of(head: memoryview, length: int, gso_size: int) -> Seg | None:
    """What GRO needs of a ``length``-byte frame whose first bytes are ``head`` (its headers
    must all be in ``head``), or None when the frame may not merge with any other."""
    if length <= _TCP + 20 or len(head) < _TCP + 20 or head[12] != 0x08 or head[13] != 0x00:
        return None
    if head[_IP] != 0x45 or head[_IP + 9] != IPPROTO_TCP:  # IPv4 without options; TCP
        return None
    tot_len, frag = _H.unpack_from(head, _IP + 2)[0], _H.unpack_from(head, _IP + 6)[0]
    if tot_len != length - ETH_HLEN or frag & (IP_MF | IP_OFFMASK):
        return None  # padded, truncated, or a fragment
    hlen = _TCP + (head[_TCP + 12] >> 4) * 4
    flags = head[_TCP + 13]
    if hlen < _TCP + 20 or hlen > len(head) or hlen >= length or flags & _REFUSE or not flags & TCP_ACK:
        return None
    key = b"".join(
        (
            head[: _IP + 2],  # Ethernet header, version/IHL, TOS
            bytes((head[_IP + 6] & (IP_DF >> 8), head[_IP + 8])),  # DF, TTL
            head[_IP + 12 : _TCP + 4],  # addresses, ports
            head[_TCP + 8 : _TCP + 12],  # ACK number
            bytes((head[_TCP + 12], flags & ~TCP_PSH & 0xFF)),  # data offset, flags but PSH
            head[_TCP + 14 : _TCP + 16],  # window
            head[_TCP + 20 : hlen],  # options
        )
    )
    seq = _I.unpack_from(head, _TCP + 4)[0]
    return key, seq, hlen, length - hlen, gso_size, bool(flags & TCP_PSH)


def plan(segs: Sequence[Seg | None], max_len: int = MAX_PACKET) -> list[int]:
    """How many frames each merged frame takes, in order (the counts add up to ``len(segs)``;
    1 is a frame passed as it is).  A merged frame is at most ``max_len`` bytes."""
    runs: list[int] = []
    i, n = 0, len(segs)
    while i < n:
        a = segs[i]
        k = 1
        if a is not None:
            key, seq, hlen, payload, gso, _psh = a
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


def merged_header(head: memoryview, hlen: int, payload: int, psh: bool) -> bytearray:
    """The first segment's headers, rewritten for a merged frame of ``payload`` bytes after
    them: IPv4 total length and header checksum, PSH when any segment had it, and the TCP
    checksum field holding the pseudo-header sum (checksum-partial, as GSO requires)."""
    out = bytearray(head[:hlen])
    _H.pack_into(out, _IP + 2, hlen - ETH_HLEN + payload)
    _H.pack_into(out, _IP + 10, 0)
    _H.pack_into(out, _IP + 10, internet_checksum(out[_IP:_TCP]))
    if psh:
        out[_TCP + 13] |= TCP_PSH
    l4_len = hlen - _TCP + payload
    _H.pack_into(
        out, _TCP + 16, pseudo_sum_v4(out[_IP + 12 : _IP + 16], out[_IP + 16 : _TCP], IPPROTO_TCP, l4_len)
    )
    return out
