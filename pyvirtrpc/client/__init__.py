"""The Trio client: :func:`open_connection` gives a :class:`Connection` to a libvirt daemon."""

from pyvirtrpc.client.connection import (
    Connection,
    Feature,
    open_connection,
    open_connection_stream,
    procedure_info,
)
from pyvirtrpc.client.domain import BlockInfo, BlockStats, Domain, DomainInfo, NodeInfo
from pyvirtrpc.client.subscriptions import CloseReason, EventsLost, EventStream

__all__ = [
    "BlockInfo",
    "BlockStats",
    "CloseReason",
    "Connection",
    "Domain",
    "DomainInfo",
    "EventStream",
    "EventsLost",
    "Feature",
    "NodeInfo",
    "open_connection",
    "open_connection_stream",
    "procedure_info",
]
