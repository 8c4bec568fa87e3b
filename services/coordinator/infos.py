"""The service-info bucket mirrored in memory by a KV watch, so no event waits on a KV read."""

from __future__ import annotations

from nats.js.kv import KeyValue

from ganfolk.runtime import jetstream
from ganfolk.v1 import info_pb2


class ServiceInfos(jetstream.KvMirror[info_pb2.GetInfoResponse]):
    """Service name -> its latest ``GetInfoResponse``, kept current by a watch on the bucket.

    Until the watch has delivered the bucket's current contents (and again after the watch
    broke, e.g. across a broker restart), :meth:`get` reads the bucket directly: a stale
    answer could run a stage that should have been skipped.
    """

    def __init__(self, kv: KeyValue) -> None:
        super().__init__(kv, info_pb2.GetInfoResponse.FromString, "service-info")

    async def get(self) -> dict[str, info_pb2.GetInfoResponse]:
        """Every service's info (callers must not modify the returned dict)."""
        if self._current:
            return self._entries
        values = await jetstream.kv_values(self.kv)
        return {key: info_pb2.GetInfoResponse.FromString(value) for key, value in values.items()}
