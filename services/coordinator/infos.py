"""The service-info bucket mirrored in memory by a KV watch, so no event waits on a KV read."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from ganfolk.runtime import jetstream
from ganfolk.v1 import info_pb2

log = logging.getLogger(__name__)


class ServiceInfos:
    """Service name -> its latest ``GetInfoResponse``, kept current by a watch on the bucket.

    Until the watch has delivered the bucket's current contents (and again after the watch
    broke, e.g. across a broker restart), :meth:`get` reads the bucket directly: a stale
    answer could run a stage that should have been skipped.
    """

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._infos: dict[str, info_pb2.GetInfoResponse] = {}
        self._current = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def get(self) -> dict[str, info_pb2.GetInfoResponse]:
        """Every service's info (callers must not modify the returned dict)."""
        if self._current:
            return self._infos
        values = await jetstream.kv_values(self.kv)
        return {key: info_pb2.GetInfoResponse.FromString(value) for key, value in values.items()}

    async def _run(self) -> None:
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("service-info watch broke (%s); reading the bucket until it is back", exc)
            self._current = False
            await asyncio.sleep(1)

    async def _watch(self) -> None:
        watcher = await self.kv.watchall()
        try:
            # The watch first replays the bucket (a None entry marks the end of the replay);
            # build a fresh view from it, so entries deleted while it was down disappear too.
            fresh: dict[str, info_pb2.GetInfoResponse] = {}
            async for entry in watcher:
                if entry is None:
                    self._infos, self._current = fresh, True
                    continue
                target = self._infos if self._current else fresh
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    target.pop(entry.key, None)
                else:
                    target[entry.key] = info_pb2.GetInfoResponse.FromString(entry.value)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()
