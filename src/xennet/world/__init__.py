"""Worlds: the I/O adapters that run netfront and netback in domains (processes, or one process)."""
