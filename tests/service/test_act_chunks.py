"""`/act` for a chunked model (action_horizon H = 4): `chunk` / `chunks` replies in JSON and msgpack, the
inpainting fields and their 422s, micro-batches mixing requests with and without a prefix, deadlines,
bounds per action, the websocket, and the client (`PolicyClient`, `RemotePolicy`) on top; an H = 1 model's
reply keeps its keys."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from qipo_client import AsyncPolicyClient, PolicyClient, RemotePolicy, Seeds
from qipo_client.chunking import ChunkedController, SimulatedDelay

from service import codec
from service.artifact import Manifest
from tests.helpers import Running, running_server
from tests.service.conftest import build_artifact, serve_settings

H, A = 4, 1
STATE = [0.1, 0.2, 0.3]
COMMITTED_ATOL = 1e-5  # the OT path ends at the committed prefix; the env-unit round trip costs ulps


@pytest.fixture(scope="module")
def chunk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    pytest.importorskip("torch")
    from service.app import create_app
    from service.registry import open_registry

    artifact = build_artifact(tmp_path_factory.mktemp("chunk-artifact"), horizon=H)
    root = tmp_path_factory.mktemp("chunk-registry")
    reg = open_registry(str(root), "qipo")
    mv = reg.publish(artifact)
    reg.promote(mv.name, "production", mv.version)
    app = create_app(serve_settings(root, tmp_path_factory.mktemp("cache")))
    with running_server(app) as running:
        yield running


def post(url: str, body: dict[str, Any], fmt: str = "json") -> httpx.Response:
    if fmt == "json":
        return httpx.post(f"{url}/act", json=body, timeout=10)
    kind = codec.MSGPACK
    return httpx.post(f"{url}/act", content=codec.packb(body), headers={"content-type": kind}, timeout=10)


def test_h1_reply_keeps_its_keys(server: Running) -> None:
    body = httpx.post(f"{server.url}/act", json={"state": STATE, "seed": 1}).json()
    assert list(body) == ["model", "version", "clipped", "timing", "request_id", "action"]
    refused = httpx.post(f"{server.url}/act", json={"state": STATE, "prefix": [[0.0]], "committed": 0})
    assert refused.status_code == 422 and "action_horizon 1" in refused.text


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
def test_chunk_and_chunks_in_both_encodings(chunk_server: Running, fmt: str) -> None:
    one = post(chunk_server.url, {"state": STATE, "seed": 3}, fmt)
    assert one.status_code == 200, one.text
    body = one.json() if fmt == "json" else codec.unpackb(one.content)
    assert "action" not in body and body["action_horizon"] == H
    assert body["control_period_s"] == pytest.approx(0.05)
    chunk = np.asarray(body["chunk"], dtype=np.float32)
    assert chunk.shape == (H, A) and np.all(np.abs(chunk) <= 2.0)
    if fmt == "msgpack":
        assert body["chunk"].dtype == np.float32  # typed array, as actions travel
    many = post(chunk_server.url, {"states": [STATE, STATE], "seed": 3}, fmt)
    body = many.json() if fmt == "json" else codec.unpackb(many.content)
    assert np.asarray(body["chunks"]).shape == (2, H, A) and "actions" not in body


def test_committed_part_is_kept_and_batches_mix_prefixes(chunk_server: Running) -> None:
    url = chunk_server.url
    first = np.asarray(post(url, {"state": STATE, "seed": 1}).json()["chunk"], dtype=np.float32)
    prefix = first[1:]  # one action ran: three are left, two of them committed
    body = {"state": STATE, "seed": 2, "prefix": prefix.tolist(), "committed": 2}
    alone = np.asarray(post(url, body).json()["chunk"], dtype=np.float32)
    assert np.abs(alone[:2] - prefix[:2]).max() <= COMMITTED_ATOL
    plain = np.asarray(post(url, {"state": STATE, "seed": 2}).json()["chunk"], dtype=np.float32)

    async def together() -> list[np.ndarray]:
        async with AsyncPolicyClient(url, timeout=10) as client:
            replies = await asyncio.gather(
                client.act(STATE, seed=2, prefix=prefix, committed=2),
                client.act(STATE, seed=2),
                client.act(STATE, seed=2, prefix=prefix[:1], committed=1),
            )
        return [r.chunk for r in replies]

    batched = asyncio.run(together())
    np.testing.assert_array_equal(batched[0], alone)  # a row is the same alone or batched
    np.testing.assert_array_equal(batched[1], plain)  # no prefix in a mixed batch: prefix_len 0
    assert np.abs(batched[2][:1] - prefix[:1]).max() <= COMMITTED_ATOL


BAD = [
    ({"prefix": [[0.0], [0.0]], "committed": 3}, "committed", "more than the prefix's 2"),
    ({"prefix": [[0.0]] * 4, "committed": 4}, "committed", "below the action horizon 4"),
    ({"prefix": [[0.0]] * 5}, "prefix", "action_horizon is 4"),
    ({"prefix": [[0.0, 1.0]]}, "prefix", "act_dim=1"),
    ({"prefix": [[0.0]], "committed": -1}, "committed", "≥ 0"),
    ({"prefix": [[3.0]]}, "prefix", "outside the action bounds"),
    ({"prefix": [[float("nan")]]}, "prefix", "NaN"),
    ({"committed": 1}, None, "send `prefix`"),
    ({"prefixes": [[[0.0]]]}, None, "`prefixes` goes with `states`"),
    ({"prefix": [[0.0], [1.0, 2.0]]}, "prefix", "rectangular"),
]


@pytest.mark.parametrize(("extra", "field", "says"), BAD)
def test_bad_prefixes_are_422_saying_what_to_fix(
    chunk_server: Running, extra: dict[str, Any], field: str | None, says: str
) -> None:
    for fmt in ("json", "msgpack"):
        content = json.dumps({"state": STATE, **extra}) if fmt == "json" else None
        if content is not None:
            reply = httpx.post(f"{chunk_server.url}/act", content=content, timeout=10)
        else:
            reply = post(chunk_server.url, {"state": STATE, **extra}, fmt)
        assert reply.status_code == 422, reply.text
        detail = reply.json()["detail"][0]
        assert says in detail["msg"], detail
        if field is not None:
            assert detail["loc"] == ["body", field]


def test_batch_prefixes_rules(chunk_server: Running) -> None:
    url = chunk_server.url
    ok = post(url, {"states": [STATE, STATE], "prefixes": [[[0.5]], [[-0.5]]], "committed": [1, 0]})
    chunks = np.asarray(ok.json()["chunks"], dtype=np.float32)
    assert chunks.shape == (2, H, A) and abs(chunks[0, 0, 0] - 0.5) <= COMMITTED_ATOL
    wrong = post(url, {"states": [STATE, STATE], "prefixes": [[[0.5]]]})
    assert wrong.status_code == 422 and "one per state" in wrong.text
    counts = post(url, {"states": [STATE, STATE], "prefixes": [[[0.5]], [[0.5]]], "committed": [1]})
    assert counts.status_code == 422 and "one int or one per state" in counts.text


def test_deadline_bounds_and_websocket(chunk_server: Running) -> None:
    late = post(chunk_server.url, {"state": STATE, "deadline_ms": 0.001})
    assert late.status_code == 504 and "chunk" not in late.json()
    extreme = post(chunk_server.url, {"states": [[50.0, -50.0, 80.0]] * 8, "seed": 0}).json()
    assert np.all(np.abs(np.asarray(extreme["chunks"])) <= 2.0)
    from qipo_client.ws import WebSocketClient

    with WebSocketClient(chunk_server.url, timeout=10) as ws:
        reply = ws.act(STATE, seed=3, prefix=[[0.25]], committed=1)
        assert reply.chunk.shape == (H, A) and abs(reply.chunk[0, 0] - 0.25) <= COMMITTED_ATOL
        with pytest.raises(ValueError, match=r"read `\.chunk`"):
            _ = reply.action


def test_client_metadata_and_remote_policy_under_the_controller(chunk_server: Running) -> None:
    with PolicyClient(chunk_server.url, timeout=10) as client:
        meta = client.metadata()
        assert meta.action_horizon == H and meta.control_period_s == pytest.approx(0.05)
        manifest = Manifest.model_validate(client.models()["manifest"])
        assert manifest.inpainting == "replace"
    with RemotePolicy(chunk_server.url, robot_id="r1") as remote:
        assert remote.infer(np.zeros((3, 3), np.float32)).shape == (3, H, A)
        seeded = remote.infer(np.zeros((2, 3), np.float32), Seeds([1, 2]))
        assert seeded.shape == (2, H, A)
        clock = [0.0]
        ctrl = ChunkedController(
            remote, runner=SimulatedDelay(1, 0.05, lambda: clock[0]), clock=lambda: clock[0], execute_steps=2
        )
        executed = []
        for _ in range(12):
            executed.append(ctrl.step(np.asarray(STATE, np.float32)))
            clock[0] += 0.05
        inpainted = [sw for sw in ctrl.switches if sw.inpainted]
        assert inpainted and all(sw.committed == 1 for sw in inpainted)
        for sw in inpainted:
            assert np.abs(sw.chunk[:1] - sw.prefix[:1]).max() <= COMMITTED_ATOL
            np.testing.assert_array_equal(executed[sw.request_step], sw.prefix[0])


def test_canary_and_pinning_route_whole_chunks_per_robot(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Production H = 4 and a canary with H = 2: each robot stays on the version its id hashes to and gets
    that version's chunk length on every call (so a robot never switches horizon mid-episode); pinning a
    version serves its chunks to any robot; a prefix longer than the pinned model's H is a 422 naming it."""
    from service import canary
    from service.app import create_app
    from service.registry import open_registry

    root = tmp_path_factory.mktemp("canary-chunks")
    reg = open_registry(str(root), "qipo")
    prod = reg.publish(build_artifact(tmp_path_factory.mktemp("h4"), horizon=4, seed=1))
    reg.promote(prod.name, "production", prod.version)
    trial = reg.publish(build_artifact(tmp_path_factory.mktemp("h2"), horizon=2, seed=2))
    canary.start(reg, trial.name, trial.version, 0.5)
    horizon = {prod.version: 4, trial.version: 2}
    app = create_app(serve_settings(root, tmp_path_factory.mktemp("canary-cache")))
    with running_server(app) as running:
        seen: dict[int, list[str]] = {prod.version: [], trial.version: []}
        for robot in [f"arm-{i:02d}" for i in range(16)]:
            on_trial = canary.routes_to_canary(robot, 0.5, trial.name, trial.version)
            expected = trial.version if on_trial else prod.version
            for step in range(3):
                body = post(running.url, {"state": STATE, "robot_id": robot, "seed": step}).json()
                assert body["version"] == expected and body["action_horizon"] == horizon[expected]
                assert np.asarray(body["chunk"]).shape == (horizon[expected], A)
            seen[expected].append(robot)
        assert seen[prod.version] and seen[trial.version]  # both arms of the canary were exercised
        robot = seen[trial.version][0]
        pinned = post(running.url, {"state": STATE, "robot_id": robot, "model": str(prod.version)}).json()
        assert pinned["version"] == prod.version and np.asarray(pinned["chunk"]).shape == (4, A)
        prefix = {"prefix": [[0.1], [0.2], [0.3]], "committed": 1}
        kept = post(running.url, {"state": STATE, "model": str(prod.version), **prefix}).json()
        assert abs(kept["chunk"][0][0] - 0.1) <= COMMITTED_ATOL
        refused = post(running.url, {"state": STATE, "model": "canary", **prefix})
        assert refused.status_code == 422 and "action_horizon is 2" in refused.text, refused.text
