"""Byte-exact wire formats from Xen's public headers; checked against C by the ABI test."""
