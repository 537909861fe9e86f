"""The client's tests run against a live server named by QIPO_SERVER_URL (a Pendulum-shaped model: obs 3,
act 1 in [-2, 2]); `make test-client` starts one and runs them from a venv holding qipo-client alone."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def url() -> str:
    value = os.environ.get("QIPO_SERVER_URL")
    if not value:
        pytest.skip("set QIPO_SERVER_URL to a running server (make test-client starts one)")
    return value
