"""netfront's half of the xenbus handshake, as a table (the reference: docs/handshake.md).

Compatible with Linux xen-netfront's ``netback_changed``: connect when the backend says
InitWait and we are Initialising; a backend Closing (or Closed: we missed its Closing) under
a connection tears ours down and says Closed.  Beyond Linux: a backend that vanishes under a
live connection is a fatal error (nobody will ever answer our rings), and a backend back in
InitWait after we closed is reconnected to (Closed → Initialising), as after a backend
restart.  Peer states a netback never takes (Initialised, Reconfiguring, Reconfigured) and
requests that make no sense where we are (reconnect while connected) are refused.

Rendered (``render_text(TABLE)``; tests hold this docstring equal to it)::

    state         event              effects                                           next
    Unknown       detached           teardown, stop-watching                           Closed
    Initialising  peer Unknown       —                                                 Initialising
    Initialising  peer Initialising  —                                                 Initialising
    Initialising  peer InitWait      connect, →Initialised, →Connected                 Connected
    Initialising  peer Connected     —                                                 Initialising
    Initialising  peer Closing       —                                                 Initialising
    Initialising  peer Closed        —                                                 Initialising
    Initialising  peer vanished      —                                                 Initialising
    Initialising  detached           teardown, stop-watching                           Closed
    Initialising  fatal              record-error, →Closing, teardown, →Closed         Closed
    Initialising  close              →Closing, follow-peer                             Closing
    Initialised   peer InitWait      —                                                 Initialised
    Initialised   peer Closing       teardown, →Closed                                 Closed
    Initialised   peer Closed        teardown, →Closed                                 Closed
    Initialised   peer vanished      record-error, →Closing, teardown, →Closed         Closed
    Initialised   detached           teardown, stop-watching                           Closed
    Initialised   fatal              record-error, →Closing, teardown, →Closed         Closed
    Initialised   close              →Closing, follow-peer                             Closing
    Connected     peer Unknown       record-error, →Closing, teardown, →Closed         Closed
    Connected     peer Initialising  —                                                 Connected
    Connected     peer InitWait      —                                                 Connected
    Connected     peer Connected     peer-connected                                    Connected
    Connected     peer Closing       teardown, →Closed                                 Closed
    Connected     peer Closed        teardown, →Closed                                 Closed
    Connected     peer vanished      record-error, →Closing, teardown, →Closed         Closed
    Connected     detached           teardown, stop-watching                           Closed
    Connected     fatal              record-error, →Closing, teardown, →Closed         Closed
    Connected     close              →Closing, follow-peer                             Closing
    Closing       peer Unknown       teardown, →Closed                                 Closed
    Closing       peer Initialising  —                                                 Closing
    Closing       peer InitWait      —                                                 Closing
    Closing       peer Connected     —                                                 Closing
    Closing       peer Closing       teardown, →Closed                                 Closed
    Closing       peer Closed        teardown, →Closed                                 Closed
    Closing       peer vanished      teardown, →Closed                                 Closed
    Closing       detached           teardown, stop-watching                           Closed
    Closing       fatal              record-error, teardown, →Closed                   Closed
    Closing       close              —                                                 Closing
    Closed        peer Unknown       —                                                 Closed
    Closed        peer Initialising  —                                                 Closed
    Closed        peer InitWait      →Initialising, connect, →Initialised, →Connected  Connected
    Closed        peer Connected     —                                                 Closed
    Closed        peer Closing       —                                                 Closed
    Closed        peer Closed        —                                                 Closed
    Closed        peer vanished      —                                                 Closed
    Closed        detached           teardown, stop-watching                           Closed
    Closed        fatal              record-error, teardown                            Closed
    Closed        close              —                                                 Closed
    Closed        reconnect          →Initialising, follow-peer                        Initialising
"""

from __future__ import annotations

import enum

from ..xenbus.handshake import Event, Table, render_markdown, row
from ..xenbus.states import XenbusState as S


class Action(enum.StrEnum):
    CONNECT = "connect"
    PEER_CONNECTED = "peer-connected"
    TEARDOWN = "teardown"
    RECORD_ERROR = "record-error"
    FOLLOW_PEER = "follow-peer"
    STOP_WATCHING = "stop-watching"


ACTIONS: dict[enum.Enum, str] = {  # what each action does, for the reference
    Action.CONNECT: "read the backend's features, grant the rings, allocate the event "
    "channel(s), publish them in one transaction, post rx buffers (xennet_connect)",
    Action.PEER_CONNECTED: "the backend serves our rings: frames may flow",
    Action.TEARDOWN: "close the ports, end every grant (those the backend still maps "
    "wait, XSA-396), free the pools; safe to run twice",
    Action.RECORD_ERROR: "log the error once, write it to our `error` node, mark the "
    "device broken until a reconnect",
    Action.FOLLOW_PEER: "feed the backend's current state as the next event (it may "
    "have moved while we were not listening)",
    Action.STOP_WATCHING: "drop our watches: the device is gone",
}

C, T, E, F = Action.CONNECT, Action.TEARDOWN, Action.RECORD_ERROR, Action.FOLLOW_PEER
_gone = row(T, Action.STOP_WATCHING, why="our directory is gone: tear down, say nothing", to=S.Closed)
_fatal = row(E, S.Closing, T, S.Closed, why="xenbus_dev_fatal, then teardown")
_close = row(S.Closing, F, why="orderly close: teardown follows once the backend lets go")
_closed_by_peer = row(T, S.Closed, why="the backend closed (Closed: we missed its Closing)")
_lost = row(E, S.Closing, T, S.Closed, why="the backend is gone under a connection: fatal")

TABLE: Table = {
    **{
        (s, Event.DETACHED): _gone
        for s in (S.Unknown, S.Initialising, S.Initialised, S.Connected, S.Closing, S.Closed)
    },
    # -- Initialising: waiting for the backend to probe (InitWait) --------------------------
    (S.Initialising, Event.PEER_UNKNOWN): row(why="the backend is not there yet: wait"),
    (S.Initialising, Event.PEER_VANISHED): row(why="the backend is not there yet: wait"),
    (S.Initialising, Event.PEER_INITIALISING): row(why="the backend has not probed yet: wait"),
    (S.Initialising, Event.PEER_INITWAIT): row(
        C, S.Initialised, S.Connected, why="xennet_connect; Linux skips Initialised, harmless"
    ),
    (S.Initialising, Event.PEER_CONNECTED): row(
        why="still serving our previous incarnation: it resets on seeing Initialising"
    ),
    (S.Initialising, Event.PEER_CLOSING): row(
        why="a previous connection closing: it reopens on Initialising"
    ),
    (S.Initialising, Event.PEER_CLOSED): row(why="a previous connection closed: it reopens on Initialising"),
    (S.Initialising, Event.FATAL): _fatal,
    (S.Initialising, Event.CLOSE): _close,
    # -- Initialised: inside connect, between the two writes ------------------------------
    (S.Initialised, Event.PEER_INITWAIT): row(why="the backend has not seen our rings yet: wait"),
    (S.Initialised, Event.PEER_CLOSING): _closed_by_peer,
    (S.Initialised, Event.PEER_CLOSED): _closed_by_peer,
    (S.Initialised, Event.PEER_VANISHED): _lost,
    (S.Initialised, Event.FATAL): _fatal,
    (S.Initialised, Event.CLOSE): _close,
    # -- Connected ----------------------------------------------------------------------------
    (S.Connected, Event.PEER_UNKNOWN): _lost,
    (S.Connected, Event.PEER_VANISHED): _lost,
    (S.Connected, Event.PEER_INITIALISING): row(why="ignored, as Linux does"),
    (S.Connected, Event.PEER_INITWAIT): row(why="the backend has not seen our Connected yet: wait"),
    (S.Connected, Event.PEER_CONNECTED): row(Action.PEER_CONNECTED, why="both ends connected"),
    (S.Connected, Event.PEER_CLOSING): _closed_by_peer,
    (S.Connected, Event.PEER_CLOSED): _closed_by_peer,
    (S.Connected, Event.FATAL): _fatal,
    (S.Connected, Event.CLOSE): _close,
    # -- Closing: we asked; the backend lets go ----------------------------------------------
    (S.Closing, Event.PEER_UNKNOWN): row(T, S.Closed, why="nobody left to wait for"),
    (S.Closing, Event.PEER_VANISHED): row(T, S.Closed, why="nobody left to wait for"),
    (S.Closing, Event.PEER_INITIALISING): row(why="wait for the backend's Closing"),
    (S.Closing, Event.PEER_INITWAIT): row(why="wait for the backend's Closing"),
    (S.Closing, Event.PEER_CONNECTED): row(why="wait for the backend's Closing"),
    (S.Closing, Event.PEER_CLOSING): row(T, S.Closed, why="the backend let go of our grants"),
    (S.Closing, Event.PEER_CLOSED): row(T, S.Closed, why="the backend let go of our grants"),
    (S.Closing, Event.FATAL): row(E, T, S.Closed, why="xenbus_dev_fatal while closing"),
    (S.Closing, Event.CLOSE): row(why="already closing"),
    # -- Closed ---------------------------------------------------------------------------------
    (S.Closed, Event.PEER_UNKNOWN): row(why="nothing to do"),
    (S.Closed, Event.PEER_VANISHED): row(why="nothing to do"),
    (S.Closed, Event.PEER_INITIALISING): row(why="the backend restarts: wait for its InitWait"),
    (S.Closed, Event.PEER_INITWAIT): row(
        S.Initialising, C, S.Initialised, S.Connected, why="the backend is ready again: reconnect"
    ),
    (S.Closed, Event.PEER_CONNECTED): row(why="the backend has not seen our Closed yet: wait"),
    (S.Closed, Event.PEER_CLOSING): row(why="nothing to do"),
    (S.Closed, Event.PEER_CLOSED): row(why="nothing to do"),
    (S.Closed, Event.FATAL): row(E, T, why="record it; already closed"),
    (S.Closed, Event.CLOSE): row(why="already closed"),
    (S.Closed, Event.RECONNECT): row(S.Initialising, F, why="the backend answers Initialising with InitWait"),
}


def render() -> str:
    return render_markdown(TABLE, "netfront", ACTIONS)
