"""Ports: where packets come from and go to (bridge, TAP, pcap, pktgen)."""
