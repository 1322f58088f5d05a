"""Backends a server serves: the interface (:mod:`.base`) and the mock driver (:mod:`.mock`)."""

from pyvirtrpc.backends.base import (
    Backend,
    BackendConnection,
    EmitEvent,
    Implementation,
    implements,
)

__all__ = ["Backend", "BackendConnection", "EmitEvent", "Implementation", "implements"]
