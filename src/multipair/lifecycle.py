"""``with`` and ``async with`` for the things multipair starts and stops.

One home for the context-manager plumbing of servers, stacks and process
pools: entering starts the thing, leaving stops it, however the block ends.
A class gives its own ``start`` and ``stop`` (``close`` for the async ones,
as their callers name it); the mixin only wires them to the protocol.
"""

from __future__ import annotations

from typing import Self

__all__ = ["AsyncRunning", "Running"]


class Running:
    """``with it:`` calls :meth:`start` on the way in and :meth:`stop` on the way out."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class AsyncRunning:
    """``async with it:`` awaits :meth:`start` on the way in and :meth:`close` on the way out."""

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
