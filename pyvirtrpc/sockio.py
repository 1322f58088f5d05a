"""Fast byte I/O on a Trio stream: straight system calls when the stream is a socket.

Trio's ``send_all``/``receive_some`` cost a few task switches and checks per call; an RPC
peer that writes small packets can do better on a socket: write at once without blocking
(:meth:`StreamIO.write_now`), and leave only what the kernel did not take to a writer
task (:meth:`StreamIO.pump`). Other streams (memory streams in tests, TLS) go through
Trio's methods.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import trio

__all__ = ["StreamIO"]


class StreamIO:
    """Reads and writes ``stream``; ``take`` gives the next bytes to send (b"": none)."""

    def __init__(self, stream: trio.abc.Stream, take: Callable[[], bytes],
                 receive_size: int = 256 * 1024) -> None:
        self.stream = stream
        self.take = take
        self.receive_size = receive_size
        self.fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else None
        self.unsent = b""

    async def receive(self) -> bytes | bytearray:
        """The next bytes from the peer (empty at end of stream)."""
        fd = self.fd
        if fd is None:
            return await self.stream.receive_some(self.receive_size)
        while True:
            await trio.lowlevel.wait_readable(fd)
            try:
                return os.read(fd, self.receive_size)
            except BlockingIOError:
                continue

    def write_now(self) -> bool:
        """Write what ``take`` gives, without blocking.

        Returns False when :meth:`pump` must take over (the kernel buffer is full, bytes
        wait from before, or the stream is not a socket). Raises OSError if the peer went.
        """
        fd = self.fd
        if fd is None or self.unsent:
            return False
        data = self.take()
        if not data:
            return True
        try:
            sent = os.write(fd, data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.unsent = data[sent:]
            return False
        return True

    async def pump(self) -> None:
        """Write until ``take`` has nothing more; waits while the peer does not read."""
        fd = self.fd
        while True:
            if not self.unsent:
                self.unsent = self.take()
                if not self.unsent:
                    return
            if fd is None:
                await self.stream.send_all(self.unsent)
                self.unsent = b""
                continue
            await trio.lowlevel.wait_writable(fd)
            try:
                sent = os.write(fd, self.unsent)
            except BlockingIOError:
                continue
            self.unsent = self.unsent[sent:]
