"""One asyncio event loop in a background thread, for the synchronous API over nats-py.

nats-py is asyncio only. A synchronous caller hands each call to this loop and waits for the
result (``asyncio.run_coroutine_threadsafe``): the connection, its subscriptions and every
piece of per-topic state live on the loop's thread, so they need no locks of their own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from walrus_core import WalrusClosedError

T = TypeVar("T")


class EventLoopThread:
    """A running event loop on a daemon thread; :meth:`run` executes a coroutine on it."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def running(self) -> bool:
        """Whether the loop still accepts calls."""
        return self._thread.is_alive() and not self._loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "the synchronous API was called from its own event loop; asyncio code uses"
                " walrus_nats.AsyncNatsWalrus"
            )
        if not self.running:
            coro.close()
            raise WalrusClosedError("this instance is closed (its event loop has stopped)")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:  # stop() cancelled it
            raise WalrusClosedError("this instance was closed during the call") from None

    def stop(self) -> None:
        """Stop the loop and wait for its thread (idempotent)."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            if threading.current_thread() is not self._thread:
                # Calls still running on other threads end with WalrusClosedError instead of
                # waiting forever on a loop that no longer runs.
                cancelled = asyncio.run_coroutine_threadsafe(_cancel_others(), self._loop)
                try:
                    cancelled.result(timeout=10)
                except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
                    pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            if threading.current_thread() is not self._thread:
                self._thread.join()
        if not self._thread.is_alive():
            self._loop.close()


async def _cancel_others() -> None:
    """Cancel every task of the running loop but this one, and wait until they ended."""
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks() if task is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
