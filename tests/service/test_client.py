"""service.client against a real server; the closed loop through the server equals the in-process one."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from service.client import AsyncPolicyClient, NoAction, PolicyClient, SeededActor, ServerError

from .conftest import Running

STATE = [0.1, 0.2, 0.3]


def test_client_imports_without_fastapi_or_onnxruntime() -> None:
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None\n"
        "sys.modules['onnxruntime'] = None\n"
        "sys.modules['torch'] = None\n"
        "import service.client, service.wire, service.codec\n"
        "assert 'starlette' not in sys.modules, 'starlette was imported'\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_sync_client_act_and_batch(server: Running, fmt: str) -> None:
    with PolicyClient(server.url, timeout=5.0, format=fmt) as client:  # type: ignore[arg-type]
        assert client.wait_ready(5)["ready"] is True
        one = client.act(STATE, seed=5, request_id="c1")
        assert one.action.shape == (1,) and one.action.dtype == np.float32
        assert one.request_id == "c1" and one.model == "pendulum-qipo" and one.version == 1
        batch = client.act_batch([STATE, STATE], seed=5)
        assert batch.actions.shape == (2, 1)
        assert client.models()["manifest"]["obs_dim"] == 3


def test_json_and_msgpack_clients_agree_bit_for_bit(server: Running) -> None:
    states = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    with PolicyClient(server.url, format="json") as js, PolicyClient(server.url, format="msgpack") as mp:
        for i, s in enumerate(states):
            np.testing.assert_array_equal(js.act(s, seed=i).action, mp.act(s, seed=i).action)


def test_client_errors_say_no_action_or_why(server: Running) -> None:
    with PolicyClient(server.url, timeout=5.0) as client:
        with pytest.raises(NoAction) as deadline:
            client.act(STATE, deadline_ms=0.001)
        assert deadline.value.status == 504
        with pytest.raises(ServerError) as bad:
            client.act([1.0, 2.0])
        assert bad.value.status == 422 and not isinstance(bad.value, NoAction)
        assert client.act(STATE).action.shape == (1,)
    with socket.socket() as silent:  # accepts connections (kernel backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        with PolicyClient(f"http://127.0.0.1:{port}", timeout=5.0) as client, pytest.raises(NoAction) as slow:
            started = time.monotonic()
            client.act(STATE, timeout=0.2)
        assert slow.value.status == 0 and "timeout" in str(slow.value)
        assert time.monotonic() - started < 2.0
    with PolicyClient("http://127.0.0.1:9", timeout=0.5) as dead, pytest.raises(NoAction):
        dead.act(STATE)


def test_async_client(server: Running) -> None:
    async def go() -> tuple[np.ndarray, np.ndarray]:
        async with AsyncPolicyClient(server.url, timeout=5.0) as client:
            states = np.tile(np.float32(STATE), (4, 1))
            each = await client.act_each(states, [1, 2, 3, 4])
            alone = np.stack([(await client.act(STATE, seed=s)).action for s in (1, 2, 3, 4)])
            return each, alone

    each, alone = asyncio.run(go())
    np.testing.assert_array_equal(each, alone)


def test_closed_loop_eval_through_server_equals_in_process(server: Running, serve_artifact: Path) -> None:
    pytest.importorskip("gymnasium")
    from training.cli import _act_fn_for
    from training.eval import evaluate

    act, _ = _act_fn_for(serve_artifact)
    local = evaluate(act, "Pendulum-v1", episodes=3, seed=7, progress=False)
    actor = SeededActor(server.url)
    try:
        remote = evaluate(None, "Pendulum-v1", episodes=3, seed=7, progress=False, seeded_act=actor)
    finally:
        actor.close()
    assert remote["returns"] == local["returns"]
    assert remote["mean_return"] == local["mean_return"]
