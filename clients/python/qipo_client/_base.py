"""The act methods every client offers, written once for the sync clients and once for the async ones;
each transport supplies only `_drive` (how one operation's exchanges move)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from qipo_client import _ops, codec
from qipo_client._ops import ActFields, ActOptions, ActReply, Op

if TYPE_CHECKING:
    from typing_extensions import Unpack

FORMATS = {"json": codec.JSON, "msgpack": codec.MSGPACK}


class _Format:
    def __init__(self, format: str) -> None:
        if format not in FORMATS:
            raise ValueError(f"format {format!r} is not one of {sorted(FORMATS)}")
        self.format = format
        self.media = FORMATS[format]

    def _act(self, state: Any, states: Any, timeout: Optional[float], options: ActFields) -> Op[ActReply]:
        return _ops.act(state, states, self.media, ActOptions(**options), timeout)


class SyncActs(_Format):
    """`act(state, seed=, deadline_ms=, robot_id=, request_id=, model=, timeout=)` gives one action,
    `act_batch(states, ...)` one per row (one `seed` covers the batch); both raise NoAction / ServerError
    when there is none."""

    def _drive(self, op: Op[ActReply]) -> ActReply:
        raise NotImplementedError

    def act(self, state: Any, *, timeout: Optional[float] = None, **options: Unpack[ActFields]) -> ActReply:
        return self._drive(self._act(state, None, timeout, options))

    def act_batch(
        self, states: Any, *, timeout: Optional[float] = None, **options: Unpack[ActFields]
    ) -> ActReply:
        return self._drive(self._act(None, states, timeout, options))


class AsyncActs(_Format):
    """`SyncActs`, awaited."""

    async def _drive(self, op: Op[ActReply]) -> ActReply:
        raise NotImplementedError

    async def act(
        self, state: Any, *, timeout: Optional[float] = None, **options: Unpack[ActFields]
    ) -> ActReply:
        return await self._drive(self._act(state, None, timeout, options))

    async def act_batch(
        self, states: Any, *, timeout: Optional[float] = None, **options: Unpack[ActFields]
    ) -> ActReply:
        return await self._drive(self._act(None, states, timeout, options))
