"""Dynamic batching across concurrent requests, as Triton's dynamic batcher does it.

Callers :meth:`DynamicBatcher.submit` a tensor of rows (tokens, or preprocessed pixels) and
get back their own output rows. One background task per event loop collects queued
requests: a forward pass starts as soon as ``max_batch`` rows are queued, or ``max_wait_ms``
after the first row of the batch arrived, whichever comes first. Requests are never split
across passes unless they are themselves larger than ``max_batch`` (then they are cut into
``max_batch`` pieces first). The forward function runs in a worker thread so the event loop
keeps serving; passes run one at a time, in arrival order.

One caller's bad rows fail only that caller. ``check`` (when given) validates each request's
rows at :meth:`~DynamicBatcher.submit`, before they are queued, so rows the forward function
cannot take never join a shared pass. Only requests whose rows have the same trailing shape
and dtype share a pass. And when a shared pass raises anyway, each of its requests is run
again on its own, so the exception reaches only the requests that raise by themselves and
the others get the rows they would have got alone.
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
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        max_batch: int,
        max_wait_ms: float,
        name: str = "",
        check: Callable[[torch.Tensor], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0, got {max_batch}, {max_wait_ms}")
        self.fn = fn
        self.check = check
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.name = name
        self._items: collections.deque[_Item] = collections.deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Statistics: forward passes run and the rows of the most recent ones; shared passes that
        # failed and were rerun request by request.
        self.forward_calls = 0
        self.isolated_failures = 0
        self.batch_rows: collections.deque[int] = collections.deque(maxlen=1024)

    async def submit(self, rows: torch.Tensor) -> torch.Tensor:
        """Output rows for ``rows`` (first dimension = rows), computed in shared passes.

        Raises what ``check`` raises for these rows (nothing is queued then), or what the
        forward function raises on these rows alone.
        """
        if self.check is not None:
            self.check(rows)
        n = int(rows.shape[0])
        if n == 0:
            return self.fn(rows)
        if n > self.max_batch:
            parts = await asyncio.gather(*(self._submit(p) for p in rows.split(self.max_batch)))
            return torch.cat(parts)
        return await self._submit(rows)

    async def _submit(self, rows: torch.Tensor) -> torch.Tensor:
        n = int(rows.shape[0])
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
        """The next pass: queued requests in order, up to max_batch rows, all of one row shape.

        A request whose rows differ in shape or dtype from the pass's first one stays queued
        (keeping its place) for a later pass rather than breaking the concatenation.
        """
        batch: list[_Item] = []
        rows = 0
        skipped: list[_Item] = []
        while self._items:
            item = self._items.popleft()
            n = int(item.rows.shape[0])
            if item.future.done():  # the caller went away (cancelled)
                self._queued_rows -= n
                continue
            if batch and not _compatible(batch[0].rows, item.rows):
                skipped.append(item)
                continue
            if batch and rows + n > self.max_batch:
                self._items.appendleft(item)
                break
            self._queued_rows -= n
            batch.append(item)
            rows += n
        self._items.extendleft(reversed(skipped))
        return batch

    async def _forward(self, batch: list[_Item]) -> None:
        inputs = batch[0].rows if len(batch) == 1 else torch.cat([i.rows for i in batch])
        self.forward_calls += 1
        self.batch_rows.append(int(inputs.shape[0]))
        try:
            out = await asyncio.to_thread(self.fn, inputs)
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            # One request's rows may have broken the shared pass: rerun each alone so only the
            # requests that fail by themselves see an exception.
            self.isolated_failures += 1
            log.warning(
                "shared forward pass failed; rerunning its requests one by one",
                extra={"batcher": self.name, "requests": len(batch), "error": repr(exc)},
            )
            for item in batch:
                if not item.future.done():
                    await self._forward([item])
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


def _compatible(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether rows of ``a`` and ``b`` can be concatenated into one pass."""
    return a.shape[1:] == b.shape[1:] and a.dtype == b.dtype and a.device == b.device


def _fail(item: _Item, exc: Exception) -> None:
    if not item.future.done():
        item.future.set_exception(exc)
