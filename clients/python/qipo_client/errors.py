"""What a client raises when the server gives no action."""

from __future__ import annotations

from typing import Any


class ServerError(RuntimeError):
    """The server answered without an action; `status` (0: no answer at all) and `detail` say why."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else str(detail))
        self.status = status
        self.detail = detail


class NoAction(ServerError):
    """No action this tick (deadline, overload, not ready, timeout, unreachable): use the fallback."""


# Statuses that mean "not now" rather than "your request is wrong": a robot falls back and carries on.
NO_ACTION_STATUSES = frozenset({502, 503, 504})
