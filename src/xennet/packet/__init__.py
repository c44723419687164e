"""The packet model: an skb (linear head plus frags on possibly compound pages), its GSO and
checksum state, a typed control block, checksums and software GSO."""
