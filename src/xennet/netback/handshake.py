"""netback's half of the xenbus handshake, as a table (the reference: docs/handshake.md).

Compatible with Linux xen-netback's ``frontend_changed``/``set_backend_state``: probe writes
InitWait; a frontend Connected (or Initialised, as blkback takes it: our netfront writes it
before Connected) connects from InitWait; a frontend Closing disconnects and says Closing;
Closed (or a vanished frontend) walks Closing → Closed; a frontend back in Initialising
after Closed is answered with InitWait ("prepare for reconnect"), and one that restarts
under a connection walks Connected → Closing → Closed → InitWait.  ``online`` = 0 from the
toolstack and @releaseDomain for the frontend's domain close the vif.  States a netfront
never takes (InitWait, Reconfiguring, Reconfigured) are refused.

Rendered (``render_text(TABLE)``; tests hold this docstring equal to it)::

    state         event              effects                                         next
    Unknown       detached           disconnect, unwatch                             Closed
    Initialising  detached           disconnect, unwatch                             Closed
    InitWait      peer Unknown       disconnect, →Closing, →Closed                   Closed
    InitWait      peer Initialising  —                                               InitWait
    InitWait      peer Initialised   map-rings, →Connected                           Connected
    InitWait      peer Connected     map-rings, →Connected                           Connected
    InitWait      peer Closing       disconnect, →Closing                            Closing
    InitWait      peer Closed        disconnect, →Closing, →Closed                   Closed
    InitWait      peer vanished      disconnect, →Closing, →Closed                   Closed
    InitWait      detached           disconnect, unwatch                             Closed
    InitWait      offline            disconnect, →Closing, →Closed                   Closed
    InitWait      fatal              record-fatal, disconnect, →Closing              Closing
    InitWait      released           count-peer-gone, disconnect, →Closing, →Closed  Closed
    Connected     peer Unknown       disconnect, →Closing, →Closed                   Closed
    Connected     peer Initialising  disconnect, →Closing, →Closed, →InitWait        InitWait
    Connected     peer Initialised   —                                               Connected
    Connected     peer Connected     —                                               Connected
    Connected     peer Closing       disconnect, →Closing                            Closing
    Connected     peer Closed        disconnect, →Closing, →Closed                   Closed
    Connected     peer vanished      disconnect, →Closing, →Closed                   Closed
    Connected     detached           disconnect, unwatch                             Closed
    Connected     offline            disconnect, →Closing, →Closed                   Closed
    Connected     fatal              record-fatal, disconnect, →Closing              Closing
    Connected     released           count-peer-gone, disconnect, →Closing, →Closed  Closed
    Closing       peer Unknown       disconnect, →Closed                             Closed
    Closing       peer Initialising  disconnect, →Closed, →InitWait                  InitWait
    Closing       peer Initialised   —                                               Closing
    Closing       peer Connected     —                                               Closing
    Closing       peer Closing       disconnect                                      Closing
    Closing       peer Closed        disconnect, →Closed                             Closed
    Closing       peer vanished      disconnect, →Closed                             Closed
    Closing       detached           disconnect, unwatch                             Closed
    Closing       offline            disconnect, →Closed                             Closed
    Closing       fatal              record-fatal, disconnect                        Closing
    Closing       released           count-peer-gone, disconnect, →Closed            Closed
    Closed        peer Unknown       disconnect                                      Closed
    Closed        peer Initialising  →InitWait                                       InitWait
    Closed        peer Initialised   —                                               Closed
    Closed        peer Connected     —                                               Closed
    Closed        peer Closing       disconnect                                      Closed
    Closed        peer Closed        disconnect                                      Closed
    Closed        peer vanished      disconnect                                      Closed
    Closed        detached           disconnect, unwatch                             Closed
    Closed        offline            disconnect                                      Closed
    Closed        fatal              record-fatal, disconnect                        Closed
    Closed        released           disconnect                                      Closed
"""

from __future__ import annotations

import enum

from ..xenbus.handshake import Event, Table, render_markdown, row
from ..xenbus.states import XenbusState as S


class Action(enum.StrEnum):
    CONNECT = "map-rings"
    DISCONNECT = "disconnect"
    RECORD_ERROR = "record-fatal"
    PEER_GONE = "count-peer-gone"
    STOP_WATCHING = "unwatch"


ACTIONS: dict[enum.Enum, str] = {  # what each action does, for the reference
    Action.CONNECT: "read the frontend's ring refs, ports and features, map the rings, "
    "bind the ports, build the queues (connect_rings)",
    Action.DISCONNECT: "tear the queues down, unmap the rings, close the ports; safe to run twice",
    Action.RECORD_ERROR: "count the reason in `fatal`, log once, write our `error` node",
    Action.PEER_GONE: "one log line and one `fatal[peer_gone]` count per death",
    Action.STOP_WATCHING: "drop our watches: the driver lets go of the device",
}

M, D, E = Action.CONNECT, Action.DISCONNECT, Action.RECORD_ERROR
_gone = row(D, Action.STOP_WATCHING, why="the device is dropped (directory gone, backend stops)", to=S.Closed)
_connect = row(M, S.Connected, why="connect_rings, then Connected")
_closing = row(D, S.Closing, why="the frontend is closing: let go of its grants")
_close = row(D, S.Closing, S.Closed, why="walk Closing → Closed, as set_backend_state does")
_fatal = row(E, D, S.Closing, why="xenbus_dev_fatal: the frontend sees Closing and closes")
_died = row(Action.PEER_GONE, D, S.Closing, S.Closed, why="@releaseDomain: nobody left to handshake with")
_restart = row(D, S.Closing, S.Closed, S.InitWait, why="the frontend restarted: walk to InitWait")
_LIVE = (S.Unknown, S.Initialising, S.InitWait, S.Connected, S.Closing, S.Closed)

TABLE: Table = {
    **{(s, Event.DETACHED): _gone for s in _LIVE},
    # -- InitWait: features advertised, waiting for the frontend's rings ------------------------
    (S.InitWait, Event.PEER_INITIALISING): row(why="the frontend is still setting up: wait"),
    (S.InitWait, Event.PEER_INITIALISED): _connect,
    (S.InitWait, Event.PEER_CONNECTED): _connect,
    (S.InitWait, Event.PEER_CLOSING): _closing,
    (S.InitWait, Event.PEER_CLOSED): _close,
    (S.InitWait, Event.PEER_UNKNOWN): _close,
    (S.InitWait, Event.PEER_VANISHED): _close,
    (S.InitWait, Event.OFFLINE): _close,
    (S.InitWait, Event.FATAL): _fatal,
    (S.InitWait, Event.RELEASED): _died,
    # -- Connected ----------------------------------------------------------------------------------
    (S.Connected, Event.PEER_INITIALISING): _restart,
    (S.Connected, Event.PEER_INITIALISED): row(why="a late watch for the Initialised before Connected"),
    (S.Connected, Event.PEER_CONNECTED): row(why="both ends connected"),
    (S.Connected, Event.PEER_CLOSING): _closing,
    (S.Connected, Event.PEER_CLOSED): _close,
    (S.Connected, Event.PEER_UNKNOWN): _close,
    (S.Connected, Event.PEER_VANISHED): _close,
    (S.Connected, Event.OFFLINE): _close,
    (S.Connected, Event.FATAL): _fatal,
    (S.Connected, Event.RELEASED): _died,
    # -- Closing: waiting for the frontend's Closed ---------------------------------------------
    (S.Closing, Event.PEER_INITIALISING): row(
        D, S.Closed, S.InitWait, why="the frontend restarted: walk to InitWait"
    ),
    (S.Closing, Event.PEER_INITIALISED): row(why="wait for the frontend to see our Closing"),
    (S.Closing, Event.PEER_CONNECTED): row(why="wait for the frontend to see our Closing"),
    (S.Closing, Event.PEER_CLOSING): row(D, why="wait for the frontend's Closed"),
    (S.Closing, Event.PEER_CLOSED): row(D, S.Closed, why="both ends closed"),
    (S.Closing, Event.PEER_UNKNOWN): row(D, S.Closed, why="nobody left to wait for"),
    (S.Closing, Event.PEER_VANISHED): row(D, S.Closed, why="nobody left to wait for"),
    (S.Closing, Event.OFFLINE): row(D, S.Closed, why="the toolstack detaches"),
    (S.Closing, Event.FATAL): row(E, D, why="xenbus_dev_fatal while closing"),
    (S.Closing, Event.RELEASED): row(Action.PEER_GONE, D, S.Closed, why="@releaseDomain while closing"),
    # -- Closed -------------------------------------------------------------------------------------
    (S.Closed, Event.PEER_INITIALISING): row(S.InitWait, why="prepare for reconnect"),
    (S.Closed, Event.PEER_INITIALISED): row(why="the frontend has not seen our Closed yet: wait"),
    (S.Closed, Event.PEER_CONNECTED): row(why="the frontend has not seen our Closed yet: wait"),
    (S.Closed, Event.PEER_CLOSING): row(D, why="nothing left to do"),
    (S.Closed, Event.PEER_CLOSED): row(D, why="nothing left to do"),
    (S.Closed, Event.PEER_UNKNOWN): row(D, why="nothing left to do"),
    (S.Closed, Event.PEER_VANISHED): row(D, why="nothing left to do"),
    (S.Closed, Event.OFFLINE): row(D, why="stay closed: no reconnect while offline"),
    (S.Closed, Event.FATAL): row(E, D, why="record it; already closed"),
    (S.Closed, Event.RELEASED): row(D, why="nothing left to do"),
}


def render() -> str:
    return render_markdown(TABLE, "netback", ACTIONS)
