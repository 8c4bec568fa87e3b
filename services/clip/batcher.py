"""Dynamic batching across concurrent requests, as Triton's dynamic batcher does it.

Callers :meth:`DynamicBatcher.submit` a tensor of rows (tokens, or preprocessed pixels) and
get back their own output rows. One background task per event loop collects queued
requests: a forward pass starts as soon as ``max_batch`` rows are queued, or ``max_wait_ms``
after the first row of the batch arrived, whichever comes first. Requests are never split
across passes unless they are themselves larger than ``max_batch`` (then they are cut into
``max_batch`` pieces first). The forward function runs in a worker thread so the event loop
keeps serving; passes run one at a time, in arrival order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["DynamicBatcher"]

log = logging.getLogger(__name__)


@dataclass
class _Item:
    rows: torch.Tensor
    future: asyncio.Future[torch.Tensor]


class DynamicBatcher:
    def __init__(
        self, fn: Callable[[torch.Tensor], torch.Tensor], max_batch: int, max_wait_ms: float, name: str = ""
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.name = name
        self._items: collections.deque[_Item] = collections.deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Statistics: forward passes run and the rows of the most recent ones.
        self.forward_calls = 0
        self.batch_rows: collections.deque[int] = collections.deque(maxlen=1024)

    async def submit(self, rows: torch.Tensor) -> torch.Tensor:
        """Output rows for ``rows`` (first dimension = rows), computed in shared passes."""
        n = int(rows.shape[0])
        if n == 0:
            return self.fn(rows)
        if n > self.max_batch:
            parts = await asyncio.gather(*(self.submit(p) for p in rows.split(self.max_batch)))
            return torch.cat(parts)
        loop = self._ensure_running()
        item = _Item(rows, loop.create_future())
        self._items.append(item)
        self._queued_rows += n
        assert self._wakeup is not None
        self._wakeup.set()
        return await item.future

    def _ensure_running(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            # A new loop (or a crashed worker): start afresh; items of another loop cannot be served here.
            self._items.clear()
            self._queued_rows = 0
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run(), name=f"batcher-{self.name}")
        return loop

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._items:
            if not item.future.done():
                item.future.cancel()
        self._items.clear()
        self._queued_rows = 0

    async def _run(self) -> None:
        assert self._wakeup is not None and self._loop is not None
        wakeup, loop = self._wakeup, self._loop
        while True:
            while not self._items:
                wakeup.clear()
                await wakeup.wait()
            deadline = loop.time() + self.max_wait
            while self._queued_rows < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if batch:
                await self._forward(batch)

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        while self._items:
            item = self._items[0]
            n = int(item.rows.shape[0])
            if batch and rows + n > self.max_batch:
                break
            self._items.popleft()
            self._queued_rows -= n
            if item.future.done():  # the caller went away (cancelled)
                continue
            batch.append(item)
            rows += n
        return batch

    async def _forward(self, batch: list[_Item]) -> None:
        inputs = batch[0].rows if len(batch) == 1 else torch.cat([i.rows for i in batch])
        self.forward_calls += 1
        self.batch_rows.append(int(inputs.shape[0]))
        try:
            out = await asyncio.to_thread(self.fn, inputs)
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        except BaseException:  # the batcher is closing: nobody will answer these callers
            for item in batch:
                item.future.cancel()
            raise
        start = 0
        for item in batch:
            n = int(item.rows.shape[0])
            if not item.future.done():
                item.future.set_result(out[start : start + n])
            start += n
