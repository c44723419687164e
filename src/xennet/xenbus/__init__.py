"""xenbus: device states, the exact xenstore paths of a vif, and the toolstack step.

Sits on the xenstore layer; netfront and netback build their handshakes on it.
"""
