"""The platform-neutral driver loops: a domain's event loop, and netfront or netback serving
real Linux interfaces (TAPs) or a learning bridge.  The sim world and a real Xen host run them alike."""
