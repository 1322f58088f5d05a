"""pyvirtrpc: libvirt's RPC protocol in pure Python, with Trio."""

from pyvirtrpc.client import (
    BlockInfo,
    BlockStats,
    CloseReason,
    Connection,
    Domain,
    DomainInfo,
    EventsLost,
    EventStream,
    NodeInfo,
    open_connection,
)
from pyvirtrpc.errors import (
    ConnectionClosed,
    Error,
    ErrorDomain,
    ErrorLevel,
    ErrorNumber,
    FramingError,
    InvalidArgError,
    NoDomainError,
    NoSupportError,
    OperationDeniedError,
    OperationInvalidError,
    ProtocolError,
    RemoteError,
)
from pyvirtrpc.events import DomainEventID

__version__ = "0.1.0"

__all__ = [
    "BlockInfo",
    "BlockStats",
    "CloseReason",
    "Connection",
    "ConnectionClosed",
    "Domain",
    "DomainEventID",
    "DomainInfo",
    "Error",
    "ErrorDomain",
    "ErrorLevel",
    "ErrorNumber",
    "EventStream",
    "EventsLost",
    "FramingError",
    "InvalidArgError",
    "NoDomainError",
    "NoSupportError",
    "NodeInfo",
    "OperationDeniedError",
    "OperationInvalidError",
    "ProtocolError",
    "RemoteError",
    "open_connection",
]
