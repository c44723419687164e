"""xennet: the Xen paravirtual network split driver (netfront and netback) in Python."""

__version__ = "0.1.0"
