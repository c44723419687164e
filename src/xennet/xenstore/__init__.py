"""xenstore: the xs_wire protocol, a xenstored (core + daemon) and a client.

- ``wire``: framing (``Message``, ``Decoder``, ``encode``), NUL-string helpers.
- ``store``/``server``: the tree and ``XenstoredCore``, the daemon's logic without I/O.
- ``daemon``: xenstored on unix sockets (``Xenstored``, ``run``, ``spawn``, ``main``).
- ``client``: ``XenstoreClient`` over a socket or in-process (``XenstoreClient.in_process``).
"""

from .client import ClientProtocol, LocalTransport, SocketTransport, Transaction, Transport, XenstoreClient
from .errors import XenstoreConnectionError, XenstoreError
from .server import DomainEvent, XenstoredCore
from .wire import Decoder, Message, PayloadTooLarge, ProtocolError, encode, join_strings, split_strings

__all__ = [
    "ClientProtocol",
    "Decoder",
    "DomainEvent",
    "LocalTransport",
    "Message",
    "PayloadTooLarge",
    "ProtocolError",
    "SocketTransport",
    "Transaction",
    "Transport",
    "XenstoreClient",
    "XenstoreConnectionError",
    "XenstoreError",
    "XenstoredCore",
    "encode",
    "join_strings",
    "split_strings",
]
