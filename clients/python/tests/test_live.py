"""qipo-client against a live server: both formats, sync and async, errors as NoAction / ServerError, the
server as a `Policy`, the wrappers, and (with the `ws` extra) the websocket clients."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import time

import numpy as np
import pytest

from qipo_client import (
    AsyncPolicyClient,
    NoAction,
    Policy,
    PolicyClient,
    Recording,
    RemotePolicy,
    Seeded,
    Seeds,
    ServerError,
)

STATE = [0.1, 0.2, 0.3]
SERVER_ONLY = ("fastapi", "starlette", "uvicorn", "redis", "onnxruntime", "torch")


@pytest.mark.skipif(os.environ.get("QIPO_CLIENT_ALONE") != "1", reason="only in the client's own venv")
def test_nothing_of_the_server_is_installed() -> None:
    found = [name for name in SERVER_ONLY if importlib.util.find_spec(name) is not None]
    assert not found, f"qipo-client pulled server packages: {found}"


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_sync_client_act_and_batch(url: str, fmt: str) -> None:
    with PolicyClient(url, timeout=5.0, format=fmt) as client:
        assert client.wait_ready(5)["ready"] is True
        one = client.act(STATE, seed=5, request_id="c1")
        assert one.action.shape == (1,) and one.action.dtype == np.float32
        assert one.request_id == "c1" and one.version >= 1 and -2.0 <= one.action[0] <= 2.0
        batch = client.act_batch([STATE, STATE], seed=5)
        assert batch.actions.shape == (2, 1)
        assert client.models()["manifest"]["obs_dim"] == 3
        meta = client.metadata()
        assert (meta.obs_dim, meta.act_dim, meta.action_low, meta.action_high) == (3, 1, (-2.0,), (2.0,))


def test_json_and_msgpack_agree_bit_for_bit(url: str) -> None:
    states = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    with PolicyClient(url, format="json") as js, PolicyClient(url, format="msgpack") as mp:
        for i, s in enumerate(states):
            np.testing.assert_array_equal(js.act(s, seed=i).action, mp.act(s, seed=i).action)


def test_errors_say_no_action_or_why(url: str) -> None:
    with PolicyClient(url, timeout=5.0) as client:
        with pytest.raises(NoAction) as deadline:
            client.act(STATE, deadline_ms=0.001)
        assert deadline.value.status == 504
        with pytest.raises(ServerError) as bad:
            client.act([1.0, 2.0])
        assert bad.value.status == 422 and not isinstance(bad.value, NoAction)
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


def test_async_client_each_row_equals_alone(url: str) -> None:
    async def go() -> tuple[np.ndarray, np.ndarray]:
        async with AsyncPolicyClient(url, timeout=5.0) as client:
            await client.wait_ready(5)
            each = await client.act_each(np.tile(np.float32(STATE), (4, 1)), [1, 2, 3, 4])
            alone = np.stack([(await client.act(STATE, seed=s)).action for s in (1, 2, 3, 4)])
            return each, alone

    each, alone = asyncio.run(go())
    np.testing.assert_array_equal(each, alone)


def test_the_server_is_a_policy(url: str) -> None:
    states = np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32)
    with RemotePolicy(url) as remote, PolicyClient(url) as client:
        assert isinstance(remote, Policy)
        assert remote.metadata.obs_dim == 3 and remote.metadata.noise_width == 1
        seeded = remote.infer(states, Seeds([7, 8, 9]))
        one_by_one = np.stack([client.act(s, seed=k).action for s, k in zip(states, (7, 8, 9))])
        np.testing.assert_array_equal(seeded, one_by_one)
        assert remote.infer(states).shape == (3, 1)
        with pytest.raises(ValueError, match="Seeds"):
            remote.infer(states, np.zeros((3, 1), dtype=np.float32))
        with pytest.raises(ValueError, match="one seed per row"):
            remote.infer(states, Seeds([1]))


def test_wrappers_replay_and_record(url: str) -> None:
    states = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    with RemotePolicy(url) as remote:
        policy = Recording(Seeded(remote, seed=3))
        first = [policy.infer(states) for _ in range(3)]
        policy.reset()
        again = [policy.infer(states) for _ in range(3)]
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
        assert not np.array_equal(first[0], first[1])  # each call has its own seeds
        assert len(policy.episodes) == 1 and len(policy.steps) == 3
        assert policy.metadata == remote.metadata


def test_websocket_clients_answer_as_http_does(url: str) -> None:
    pytest.importorskip("websockets")
    from qipo_client.ws import AsyncWebSocketClient, WebSocketClient

    with PolicyClient(url) as http:
        expected = http.act(STATE, seed=11).action
    for fmt in ("json", "msgpack"):
        with WebSocketClient(url, timeout=5.0, format=fmt) as ws:
            np.testing.assert_array_equal(ws.act(STATE, seed=11).action, expected)
            assert ws.act_batch([STATE, STATE]).actions.shape == (2, 1)
            with pytest.raises(ServerError) as bad:
                ws.act([1.0])
            assert bad.value.status == 422
            np.testing.assert_array_equal(ws.act(STATE, seed=11).action, expected)  # still open

    async def go() -> np.ndarray:
        async with AsyncWebSocketClient(url, timeout=5.0) as ws:
            return (await ws.act(STATE, seed=11)).action

    np.testing.assert_array_equal(asyncio.run(go()), expected)
