"""docs/handshake.md, rendered from the two ends' tables: the doc cannot drift from the code.

Regenerate with ``python -m xennet.analysis.handshake_doc > docs/handshake.md``; a test holds the
file equal to ``render_reference()``.
"""

from __future__ import annotations

HEADER = """# The xenbus handshake of a vif

Generated from `src/xennet/netfront/handshake.py` and `src/xennet/netback/handshake.py` by
`python -m xennet.analysis.handshake_doc > docs/handshake.md`; `tests/test_handshake.py` fails when
this file and the tables disagree.  Do not edit it by hand.

Each end is a table: (our state, event) → (effects, next state).  An effect is an action or
`→State`, a write of that state to our `state` node, in order.  A (state, event) pair that
is not in an end's table is refused: one log line, `handshake_refused` counted in that end's
stats, no state change, no exception.  Events:

- `peer <State>`: the other end's `state` node now reads that state (0 or garbage: `Unknown`);
- `peer vanished`: the other end's `state` node (or its directory) is gone;
- `detached`: our own directory is gone (a toolstack detach), or the driver drops the device;
- `offline`: the toolstack wrote `online` = 0 to the backend (`xl network-detach`); it
  outranks whatever the frontend says, so nothing reconnects while offline;
- `fatal`: our own fatal error (garbage keys, a hostile ring, a port that died);
- `close` / `reconnect`: the frontend's user asks for an orderly close / a new connection;
- `released`: @releaseDomain, and the frontend's domain is no longer there.

"""


def render_reference() -> str:
    from ..netback import handshake as netback
    from ..netfront import handshake as netfront

    return HEADER + netfront.render() + "\n" + netback.render()


if __name__ == "__main__":
    print(render_reference(), end="")
