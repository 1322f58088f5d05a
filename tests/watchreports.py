"""What the watcher tests share: its reports, collected as they come."""

from __future__ import annotations

import trio

from pyvirtrpc.watch import Report


class Reports(list[Report]):
    """Pass ``reports.append`` as a Watcher's ``report``."""

    def kinds(self, kind: str) -> list[Report]:
        return [r for r in self if r.kind == kind]

    async def wait(self, kind: str, count: int = 1, timeout: float = 30) -> None:
        """Until ``count`` reports of ``kind`` have come (TooSlowError after ``timeout``)."""
        with trio.fail_after(timeout):
            while len(self.kinds(kind)) < count:
                await trio.sleep(0.005)
