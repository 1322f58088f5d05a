"""The exception hierarchy shared by every layer of pyvirtrpc."""

from __future__ import annotations


class Error(Exception):
    """Base of every exception pyvirtrpc raises."""


class ProtocolError(Error):
    """The peer sent something the protocol does not allow (a local finding)."""


class FramingError(ProtocolError):
    """A packet's length word or header is invalid; the connection cannot go on."""
