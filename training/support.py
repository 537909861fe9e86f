"""The support sets of one renewal, held only for the states this process has drawn.

A support set is M policy samples plus the dataset action, [M+1, A], and its min-twin Q, [M+1]. Held densely
for every state that is 68·(M+1)·A/3 bytes a state — 0.5 GB at 2M Hopper transitions with M = 16 — on every
rank, although lazy renewal only ever draws the states one renewal period touches (`renew_every ×
improve_batch_size`, divided by the world size under torchrun). So the sets live in slots allocated as
states are drawn (growing by doubling), and a per-state slot index maps a dataset row to its slot. After a
renewal the slots are reused, so memory follows the largest period, not the dataset.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class SupportSets:
    """Row → (actions [M+1, A], Q [M+1]) for the rows drawn since the last `clear`."""

    def __init__(self, n_rows: int, m_plus_1: int, act_dim: int) -> None:
        self.n_rows, self.width, self.act_dim = n_rows, m_plus_1, act_dim
        self.slot = torch.full((n_rows,), -1, dtype=torch.int64)
        self._actions = torch.empty(0, m_plus_1, act_dim)
        self._q = torch.empty(0, m_plus_1)
        self.count = 0

    def clear(self) -> None:
        """Forget every set (a renewal); the slot memory is kept for the next period."""
        self.slot.fill_(-1)
        self.count = 0

    @property
    def filled(self) -> Tensor:
        """[N] bool: which rows hold a set."""
        return self.slot >= 0

    def rows(self) -> Tensor:
        """The rows holding a set, ascending."""
        return torch.nonzero(self.slot >= 0).flatten()

    def missing(self, rows: Tensor) -> Tensor:
        """The distinct rows of `rows` without a set."""
        return rows[self.slot[rows] < 0].unique()

    def put(self, rows: Tensor, actions: Tensor, q: Tensor) -> None:
        """Store the sets of distinct, not yet held `rows`: actions [k, M+1, A], q [k, M+1]."""
        k = len(rows)
        self.reserve(self.count + k)
        slots = torch.arange(self.count, self.count + k, device=self.slot.device)
        self._actions[slots] = actions.to(self._actions.device)
        self._q[slots] = q.to(self._q.device)
        self.slot[rows] = slots
        self.count += k

    def actions(self, rows: Tensor) -> Tensor:
        return self._actions[self._slots(rows)]

    def q(self, rows: Tensor) -> Tensor:
        return self._q[self._slots(rows)]

    def _slots(self, rows: Tensor) -> Tensor:
        slots = self.slot[rows]
        if bool((slots < 0).any()):
            raise KeyError("support sets read before they were drawn; call ensure_support first")
        return slots

    def reserve(self, size: int) -> None:
        """Room for `size` sets (eager renewal asks for every state at once, sparing the doublings)."""
        capacity = len(self._actions)
        if size <= capacity:
            return
        capacity = min(self.n_rows, max(size, 2 * capacity, 1024))
        actions = torch.empty(capacity, self.width, self.act_dim, device=self._actions.device)
        q = torch.empty(capacity, self.width, device=self._q.device)
        actions[: self.count] = self._actions[: self.count]
        q[: self.count] = self._q[: self.count]
        self._actions, self._q = actions, q

    @property
    def nbytes(self) -> int:
        """Bytes held (slot index + slot buffers)."""
        return sum(t.numel() * t.element_size() for t in (self.slot, self._actions, self._q))

    # ----- checkpoints: the drawn rows only, so the file does not depend on the world size -----------
    def state_dict(self) -> dict[str, Tensor]:
        rows = self.rows()
        return {"rows": rows.cpu(), "actions": self.actions(rows).cpu(), "q": self.q(rows).cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clear()
        rows = state["rows"].to(self.slot.device)
        if len(rows):
            self.put(rows, state["actions"], state["q"])

    @classmethod
    def from_dense(cls, support: Tensor, support_q: Tensor, filled: Tensor) -> SupportSets:
        """Read a checkpoint of the trainer before sparse sets (dense [N, M+1, A] + a filled mask)."""
        n, width, act_dim = support.shape
        sets = cls(n, width, act_dim)
        rows = torch.nonzero(filled).flatten()
        if len(rows):
            sets.put(rows, support[rows], support_q[rows])
        return sets
