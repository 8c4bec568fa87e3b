"""The coordinator's view of the service-info bucket follows it through a KV watch."""

from __future__ import annotations

import asyncio
import uuid

from nats.aio.client import Client as NATS

from ganfolk.runtime import jetstream
from ganfolk.v1 import info_pb2
from services.coordinator.infos import ServiceInfos


async def eventually(
    infos: ServiceInfos, check: object, timeout: float = 5.0
) -> dict[str, info_pb2.GetInfoResponse]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        current = await infos.get()
        if check(current):  # type: ignore[operator]
            return current
        assert asyncio.get_running_loop().time() < deadline, current
        await asyncio.sleep(0.02)


async def test_infos_follow_puts_and_deletes(nc: NATS) -> None:
    kv = await jetstream.ensure_kv(nc.jetstream(), f"test_services_{uuid.uuid4().hex[:8]}", history=1)
    await kv.put("stylegan", info_pb2.GetInfoResponse(service="stylegan").SerializeToString())
    infos = ServiceInfos(kv)
    # Before the watch has replayed the bucket, answers come from a direct read.
    assert set(await infos.get()) == {"stylegan"}
    infos.start()
    try:
        await eventually(infos, lambda d: infos._current and "stylegan" in d)
        await kv.put(
            "clip", info_pb2.GetInfoResponse(service="clip", random_weights=True).SerializeToString()
        )
        current = await eventually(infos, lambda d: "clip" in d)
        assert current["clip"].random_weights
        await kv.delete("stylegan")
        await eventually(infos, lambda d: "stylegan" not in d)
        assert infos._current  # served from memory, no read per call
    finally:
        await infos.stop()
