"""`/act` over real HTTP (uvicorn on loopback): batching, seeds, safety codes, encodings, WS, metrics."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from service import codec
from service.deps import services_of
from service.runtime import OnnxPolicy

from .conftest import Running, running_server, serve_settings

STATE = [0.5, -0.3, 1.2]


def metric(url: str, name: str) -> float:
    """Sum of every sample of `name` on /metrics."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def post(url: str, body: object, **kw: object) -> httpx.Response:
    return httpx.post(f"{url}/act", json=body, **kw)  # type: ignore[arg-type]


def test_reply_carries_model_version_timing_and_request_id(server: Running) -> None:
    r = post(server.url, {"state": STATE, "seed": 1, "request_id": "abc-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "pendulum-qipo" and body["version"] == 1
    assert body["request_id"] == "abc-1"
    assert set(body["timing"]) == {"queue_ms", "infer_ms", "total_ms"}
    assert body["timing"]["total_ms"] >= body["timing"]["infer_ms"] > 0
    assert len(body["action"]) == 1 and -2.0 <= body["action"][0] <= 2.0
    # The header form is echoed when the body has none.
    r2 = post(server.url, {"state": STATE}, headers={"x-request-id": "hdr-7"})
    assert r2.json()["request_id"] == "hdr-7"


def test_seeded_action_matches_onnx_in_process(server: Running, serve_artifact: Path) -> None:
    policy = OnnxPolicy.load(serve_artifact)
    states = np.random.default_rng(3).standard_normal((5, 3)).astype(np.float32)
    r = post(server.url, {"states": states.tolist(), "seed": 42})
    noise = np.random.default_rng(42).standard_normal((5, 1), dtype=np.float32)
    expected = policy.infer(states, noise)
    np.testing.assert_array_equal(np.asarray(r.json()["actions"], dtype=np.float32), expected)


def test_micro_batched_and_single_answers_are_identical(server: Running) -> None:
    """64 concurrent single requests are joined into few ONNX calls; each answer equals the one it gets
    alone, for the same seed."""
    states = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    with httpx.Client() as client:
        alone = [
            client.post(f"{server.url}/act", json={"state": s.tolist(), "seed": i}).json()["action"]
            for i, s in enumerate(states)
        ]
    calls_before = metric(server.url, "qipo_batch_size_count")

    async def burst() -> list[list[float]]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64)) as client:
            replies = await asyncio.gather(
                *(
                    client.post(f"{server.url}/act", json={"state": s.tolist(), "seed": i})
                    for i, s in enumerate(states)
                )
            )
        return [r.json()["action"] for r in replies]

    together = asyncio.run(burst())
    calls = metric(server.url, "qipo_batch_size_count") - calls_before
    assert together == alone
    assert calls < 64, "concurrent requests were not batched"


def test_msgpack_and_json_give_the_same_action(server: Running) -> None:
    js = post(server.url, {"state": STATE, "seed": 9}).json()
    body = codec.packb({"state": np.asarray(STATE, dtype=np.float32), "seed": 9})
    r = httpx.post(f"{server.url}/act", content=body, headers={"content-type": codec.MSGPACK})
    assert r.status_code == 200 and r.headers["content-type"] == codec.MSGPACK
    mp = codec.unpackb(r.content)
    np.testing.assert_array_equal(np.asarray(mp["action"], dtype=np.float32), np.float32(js["action"]))
    assert mp["version"] == js["version"]


def test_impossible_deadline_gets_504_without_action(server: Running) -> None:
    before = metric(server.url, "qipo_deadline_exceeded_total")
    r = post(server.url, {"state": STATE, "deadline_ms": 0.001, "request_id": "late-1"})
    assert r.status_code == 504
    body = r.json()
    assert "action" not in body and "deadline" in body["detail"]
    assert body["model"] == "pendulum-qipo" and body["version"] == 1 and body["request_id"] == "late-1"
    assert body["timing"]["total_ms"] > 0
    assert metric(server.url, "qipo_deadline_exceeded_total") == before + 1
    assert post(server.url, {"state": STATE, "deadline_ms": 5000}).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"state": [1.0, 2.0]}, "state"),
        ({"states": [STATE, [1.0]]}, "states"),
        ({"state": [1.0, 2.0, 1e39]}, "state"),
        ({"state": [1.0, "x", 2.0]}, "state"),
        ({"state": STATE, "states": [STATE]}, None),
        ({"state": STATE, "seed": -1}, "seed"),
        ({"state": STATE, "deadline_ms": 0}, "deadline_ms"),
        ({"state": STATE, "extra": 1}, "extra"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    server: Running, body: dict[str, object], field: str | None
) -> None:
    r = post(server.url, body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail[0]["msg"]
    if field is not None:
        assert detail[0]["loc"][:2] == ["body", field]


def test_model_not_loaded_here_is_409(server: Running) -> None:
    r = post(server.url, {"state": STATE, "model": "canary"})
    assert r.status_code == 409 and "canary" in r.json()["detail"]
    assert "retry-after" not in r.headers
    r = post(server.url, {"state": STATE, "model": "0"})  # older than anything it holds: a conflict too
    assert r.status_code == 409 and "omit `model`" in r.json()["detail"]
    assert post(server.url, {"state": STATE, "model": "²"}).status_code == 409  # isdigit(), yet not int()
    assert post(server.url, {"state": STATE, "model": "production"}).status_code == 200


def test_model_pinned_newer_than_this_replica_is_503_with_retry_after(server: Running) -> None:
    """A rolling upgrade's lag: another replica serves version 2 already; the balancer retries a 503."""
    r = post(server.url, {"state": STATE, "model": "2"})
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert "not loaded on this replica yet (loaded versions: [1])" in r.json()["detail"]
    assert r.json()["detail"].startswith("model '2'")
    assert post(server.url, {"state": STATE, "model": "1"}).status_code == 200


def test_nan_is_422_in_msgpack_and_json(server: Running) -> None:
    r = httpx.post(
        f"{server.url}/act",
        content=codec.packb({"state": np.array([0.0, math.nan, 1.0], dtype=np.float32)}),
        headers={"content-type": codec.MSGPACK},
    )
    assert r.status_code == 422 and "NaN" in r.text
    # JSON has no NaN literal, but the 422 still names the field that holds one.
    nan_json = b'{"states": [[0, 1, 1], [0, NaN, 1]]}'
    r = httpx.post(f"{server.url}/act", content=nan_json, headers={"content-type": codec.JSON})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "states", 1]
    r = httpx.post(f"{server.url}/act", content=b'{"state": [0, 1, 1]', headers={"content-type": codec.JSON})
    assert r.status_code == 422 and "not valid JSON" in r.text


def test_content_type_body_size_and_pickle_are_refused_and_server_keeps_serving(server: Running) -> None:
    payload = orjson.dumps({"state": STATE})
    assert (
        httpx.post(f"{server.url}/act", content=payload, headers={"content-type": "text/plain"}).status_code
        == 415
    )
    form = httpx.post(f"{server.url}/act", data={"state": "1"})
    assert form.status_code == 415 and "application/json" in form.text
    big = orjson.dumps({"states": [STATE] * 5000})  # > 64 KiB limit of the fixture
    r = httpx.post(f"{server.url}/act", content=big, headers={"content-type": codec.JSON})
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks() -> object:  # no Content-Length: the limit applies while the body streams in
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    r = httpx.post(f"{server.url}/act", content=chunks(), headers={"content-type": codec.JSON})  # type: ignore[arg-type]
    assert r.status_code == 413
    obj_array = codec.packb(
        {"state": {"__ndarray__": True, "dtype": "|O", "shape": [3], "data": b"\x00" * 24}}
    )
    r = httpx.post(f"{server.url}/act", content=obj_array, headers={"content-type": codec.MSGPACK})
    assert r.status_code == 422 and "pickle" in r.text
    assert (
        httpx.post(f"{server.url}/act", content=b"\xc1", headers={"content-type": codec.MSGPACK}).status_code
        == 422
    )
    assert post(server.url, {"state": STATE}).status_code == 200


def test_websocket_streams_json_and_msgpack_and_survives_errors(server: Running) -> None:
    from websockets.sync.client import connect

    with connect(server.url.replace("http", "ws") + "/act/ws") as ws:
        ws.send(json.dumps({"state": STATE, "seed": 9, "request_id": "w1"}))
        first = json.loads(ws.recv())
        assert first["request_id"] == "w1" and len(first["action"]) == 1
        ws.send(json.dumps({"state": [1.0]}))
        err = json.loads(ws.recv())
        assert err["status"] == 422 and err["detail"][0]["loc"] == ["body", "state"]
        ws.send(codec.packb({"state": np.asarray(STATE, dtype=np.float32), "seed": 9}))
        reply = codec.unpackb(ws.recv())  # type: ignore[arg-type]
        np.testing.assert_array_equal(reply["action"], np.float32(first["action"]))
    js = post(server.url, {"state": STATE, "seed": 9}).json()
    assert js["action"] == first["action"]


def test_metrics_have_design_names(server: Running) -> None:
    post(server.url, {"state": STATE})
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "qipo_act_requests_total",
        "qipo_act_latency_seconds_bucket",
        "qipo_batch_size_bucket",
        "qipo_queue_wait_seconds_bucket",
        "qipo_actions_clipped_total",
        "qipo_deadline_exceeded_total",
        "qipo_model_info",
        "qipo_model_swaps_total",
        "qipo_model_load_seconds",
    ):
        assert name in text, name
    assert 'qipo_model_info{name="pendulum-qipo",version="1"} 1.0' in text


def test_clipped_actions_are_flagged_and_counted(server: Running) -> None:
    """The untrained policy saturates often; every saturated row is flagged and counted."""
    states = np.random.default_rng(1).standard_normal((200, 3)).astype(np.float32) * 3
    before = metric(server.url, "qipo_actions_clipped_total")
    body = post(server.url, {"states": states.tolist(), "seed": 0}).json()
    actions = np.asarray(body["actions"])
    at_bound = int((np.abs(actions) >= 2.0).any(axis=1).sum())
    assert at_bound > 0 and body["clipped"] is True
    assert np.all(np.abs(actions) <= 2.0)
    assert metric(server.url, "qipo_actions_clipped_total") == before + at_bound


def test_no_model_is_503_with_retry_after(tmp_path: Path) -> None:
    from service.app import create_app

    (tmp_path / "empty").mkdir()
    app = create_app(serve_settings(tmp_path / "empty", tmp_path / "cache"))
    with running_server(app) as running:
        r = post(running.url, {"state": STATE})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert httpx.get(f"{running.url}/readyz").status_code == 503
        assert httpx.get(f"{running.url}/healthz").status_code == 200


def test_shutdown_drains_in_flight_requests(serve_registry: Path, tmp_path: Path) -> None:
    """Requests already queued when the server is told to stop all get their action."""
    from service.app import create_app

    app = create_app(serve_settings(serve_registry, tmp_path / "cache", batch_executor="thread"))
    batcher = services_of(app).batcher
    with running_server(app) as running:

        async def burst() -> tuple[list[int], int]:
            async with httpx.AsyncClient(limits=httpx.Limits(max_connections=32)) as client:
                tasks = [
                    asyncio.create_task(client.post(f"{running.url}/act", json={"states": [STATE] * 256}))
                    for _ in range(16)
                ]
                for _ in range(5000):
                    if batcher.submitted >= 16 or any(t.done() for t in tasks):
                        break
                    await asyncio.sleep(0.001)
                running.server.should_exit = True
                waiting = batcher.queue_rows
                return [r.status_code for r in await asyncio.gather(*tasks)], waiting

        statuses, waiting = asyncio.run(burst())
    assert waiting > 0, "nothing was in flight at shutdown; the test proves nothing"
    assert statuses == [200] * 16
    assert batcher.queue_rows == 0


def test_probes_answer_head_and_metrics_follow_prometheus_habits(server: Running) -> None:
    for path in ("/healthz", "/readyz", "/v1/models", "/metrics"):
        get, head = httpx.get(f"{server.url}{path}"), httpx.head(f"{server.url}{path}")
        assert head.status_code == get.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    text = httpx.get(f"{server.url}/metrics").text
    assert "_created" not in text
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert name in text, name
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert set(paths["/healthz"]) == {"get"}  # HEAD is served, not listed twice


def test_docs_load_swagger_ui_from_the_server_itself(server: Running) -> None:
    page = httpx.get(f"{server.url}/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assets = [
        u for u in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css") if u in page.text
    ]
    assert len(assets) == 2 and "cdn" not in page.text.lower()
    for url in assets:
        assert httpx.get(f"{server.url}{url}").status_code == 200, url
    assert httpx.get(f"{server.url}/docs/oauth2-redirect").status_code == 200
