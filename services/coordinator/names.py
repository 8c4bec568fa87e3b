"""The notability check of a reviewer's edited name: the text service's own, over gRPC.

An edited name must pass what a generated one passes (well-formed, not a notable person,
not another portrait's name in the same collection), so the coordinator asks the text
service's ``Name`` to keep the edited name as a reserved one: it comes back unchanged when
it passes, and replaced -- with the reason in ``rejected`` -- when it does not.
"""

from __future__ import annotations

import grpc
from pydantic import SecretStr

from ganfolk.runtime.errors import InvalidArgument, Transient
from ganfolk.v1 import text_pb2, text_pb2_grpc

DROPPED = "reserved name dropped: "


def _key(name: str) -> str:
    return " ".join(name.casefold().split())


class NameChecker:
    """Checks names with the text service at ``target`` (one channel, opened lazily)."""

    def __init__(self, target: str, timeout_s: float, token: SecretStr | None = None) -> None:
        self.target = target
        self.timeout_s = timeout_s
        # The text service's GANFOLK_GRPC_AUTH_TOKEN, required where it listens beyond loopback.
        self._metadata = (("authorization", f"Bearer {token.get_secret_value()}"),) if token else ()
        self._channel: grpc.aio.Channel | None = None

    async def check(self, name: str, description: str, exclude: list[str], seed: int) -> None:
        """Return when ``name`` may be used; InvalidArgument with the reason when it may not."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.target)
        stub = text_pb2_grpc.TextServiceStub(self._channel)
        request = text_pb2.NameRequest(
            description=description, reserved_name=name, exclude_names=exclude, max_attempts=1, seed=seed
        )
        try:
            reply = await stub.Name(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgument(f"the name {name!r} is refused: {exc.details()}") from None
            raise Transient(
                f"cannot check the name {name!r}: the text service at {self.target} answered "
                f"{exc.code().name} ({exc.details()}); try again"
            ) from None
        if _key(f"{reply.first_name} {reply.last_name}") == _key(name):
            return
        reasons = [r.removeprefix(DROPPED) for r in reply.rejected if r.startswith(DROPPED)]
        reason = reasons[0] if reasons else "the text service would not keep it"
        raise InvalidArgument(f"the name {name!r} is refused: {reason}; choose another name")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
