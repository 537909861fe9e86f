"""Training tests run torch on one thread: the tiny models here gain nothing from two, and on a shared
2-core box thread oversubscription made the suite 5× slower (79 s → 16 s for test_qipo.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)
