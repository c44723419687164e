"""The pure-Python twin of the compiled core: the same kernels, the readable reference."""

from .grant_copy import grant_check, grant_copy, segment_domids
from .netback_rx import netback_rx_estimate, netback_rx_plan, netback_rx_respond
from .netback_tx import netback_tx_assemble, netback_tx_build, netback_tx_respond, netback_tx_set_status
from .netfront_rx import netfront_rx_assemble, netfront_rx_build, netfront_rx_post, netfront_rx_slot_refs
from .netfront_tx import netfront_tx_complete, netfront_tx_post
from .pool import pool_add, pool_drain, pool_give, pool_give_pairs, pool_take, pool_take_pairs
from .ring import ring_copy_in, ring_copy_out
from .vec import csum_setup, gso_check, vec_compact, vec_fill_frame, vec_fill_frames, vec_gather, vec_release

__all__ = [
    "csum_setup",
    "grant_check",
    "gso_check",
    "grant_copy",
    "netback_rx_estimate",
    "netback_rx_plan",
    "netback_rx_respond",
    "netback_tx_assemble",
    "netback_tx_build",
    "netback_tx_respond",
    "netback_tx_set_status",
    "netfront_rx_assemble",
    "netfront_rx_build",
    "netfront_rx_post",
    "netfront_rx_slot_refs",
    "netfront_tx_complete",
    "netfront_tx_post",
    "pool_add",
    "pool_drain",
    "pool_give",
    "pool_give_pairs",
    "pool_take",
    "pool_take_pairs",
    "ring_copy_in",
    "ring_copy_out",
    "segment_domids",
    "vec_compact",
    "vec_fill_frame",
    "vec_fill_frames",
    "vec_gather",
    "vec_release",
]

KERNELS = tuple(__all__)
