"""Event subscriptions: bounded per-subscriber buffers fed by shared server registrations.

One server registration exists per (event family, event ID, object filter) and connection,
as libvirt's client keeps it; any number of local subscribers share it. Each subscriber
has its own buffer of at most ``capacity`` unread events: an event that finds it full is
dropped *for that subscriber only*, and the subscriber then reads an :class:`EventsLost`
item, in the place where the events went missing, saying how many. Nothing waits on a
slow subscriber.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from pyvirtrpc.errors import Error
from pyvirtrpc.events import ConnectionClosedEvent, Event, EventFamily

DEFAULT_EVENT_BUFFER = 1000


class CloseReason(enum.IntEnum):
    """Why a connection closed (libvirt's VIR_CONNECT_CLOSE_REASON_*)."""

    ERROR = 0  # misc I/O or protocol error
    EOF = 1  # the peer closed the connection
    KEEPALIVE = 2  # the peer stopped answering keepalive
    CLIENT = 3  # we closed it


@dataclass(frozen=True, slots=True)
class EventsLost:
    """``count`` events were dropped here because this subscriber's buffer was full."""

    count: int


Item = Event | EventsLost


class EventStream:
    """What ``async with conn.domain_events(...) as events`` gives: ``async for ev in events``.

    Items are typed events, :class:`EventsLost` markers, and finally a
    :class:`~pyvirtrpc.events.ConnectionClosedEvent` if the connection goes away while
    subscribed; iteration then ends.
    """

    def __init__(self, capacity: int = DEFAULT_EVENT_BUFFER,
                 accept: Callable[[Event], bool] | None = None) -> None:
        if capacity < 1:
            raise ValueError("an event buffer holds at least one event")
        self.capacity = capacity
        self._accept = accept
        self._items: deque[Item] = deque()
        self._queued = 0  # events in _items (markers not counted)
        self._lost = 0
        self._ended = False
        self._lot = trio.lowlevel.ParkingLot()

    def push(self, event: Event) -> None:
        """Deliver one event (never blocks; overflow becomes an EventsLost item)."""
        if self._ended or (self._accept is not None and not self._accept(event)):
            return
        if self._queued >= self.capacity:
            self._lost += 1
            return
        if self._lost:  # markers take no room: there are never more of them than events
            self._items.append(EventsLost(self._lost))
            self._lost = 0
        self._items.append(event)
        self._queued += 1
        self._lot.unpark()

    def end(self, final: ConnectionClosedEvent | None = None) -> None:
        """No more events: optionally one last item, past the capacity."""
        if self._ended:
            return
        if final is not None:
            if self._lost:
                self._items.append(EventsLost(self._lost))
                self._lost = 0
            self._items.append(final)
        self._ended = True
        self._lot.unpark_all()

    async def receive(self) -> Item:
        """The next item; raises trio.EndOfChannel once the stream has ended."""
        await trio.lowlevel.checkpoint()
        while True:
            if self._items:
                item = self._items.popleft()
                if not isinstance(item, EventsLost):
                    self._queued -= 1
                return item
            if self._lost:
                lost, self._lost = self._lost, 0
                return EventsLost(lost)
            if self._ended:
                raise trio.EndOfChannel
            await self._lot.park()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Item:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@dataclass(eq=False)
class Registration:
    """One server-side registration and the local subscribers sharing it."""

    family: EventFamily
    event_id: int
    filter_key: str | None  # the filter object's key (see FamilyInfo.key), or None
    legacy: bool = False  # registered with the pre-callback-ID procedure (no server filter)
    callback_id: int | None = None
    error: Error | None = None
    leaving: bool = False  # the last subscriber left: deregistration under way
    subscribers: set[EventStream] = field(default_factory=set)
    registered: trio.Event = field(default_factory=trio.Event)
    idle: trio.Event = field(default_factory=trio.Event)
    gone: trio.Event = field(default_factory=trio.Event)

    @property
    def key(self) -> tuple[EventFamily, int, str | None]:
        return (self.family, self.event_id, self.filter_key)

    def leave(self, stream: EventStream) -> None:
        self.subscribers.discard(stream)
        if not self.subscribers:
            self.leaving = True
            self.idle.set()
