"""The serving benchmark's parts, without running the benchmark: the floor app, the load generator against
a tiny loopback server, the in-process caller, the profile summary and the report arithmetic."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from loadtests import inproc, loadgen, serve_bench, serve_child, serve_profile, serve_report
from loadtests.floor import MODEL, floor_app
from loadtests.sampler import sampler_us_per_row


def test_floor_app_answers_act_with_the_reply_shape() -> None:
    reply = TestClient(floor_app()).post("/act", json={"state": [1.0, 0.0, 0.5], "request_id": "r1"})
    assert reply.status_code == 200
    body = reply.json()
    assert body["model"] == MODEL and body["request_id"] == "r1" and body["action"] == [0.0]
    assert set(body["timing"]) == {"queue_ms", "infer_ms", "total_ms"}


def test_requests_are_complete_http_requests() -> None:
    reqs = loadgen.requests_bytes(8)
    assert len(reqs) == 8 and len(set(reqs)) == 8
    for raw in reqs:
        head, body = raw.split(b"\r\n\r\n", 1)
        assert head.startswith(b"POST /act HTTP/1.1")
        assert f"Content-Length: {len(body)}".encode() in head
        assert len(orjson.loads(body)["state"]) == 3


@asynccontextmanager
async def http_server(status: bytes) -> AsyncIterator[int]:
    """A keep-alive loopback server answering every request with `status` and a 2-byte body."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.startswith(b"Content-Length")
                )
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(("status", "failed"), [(b"200 OK", False), (b"503 Service Unavailable", True)])
def test_load_measures_only_after_the_warmup(status: bytes, failed: bool) -> None:
    async def run() -> dict[str, float]:
        async with http_server(status) as port:
            return await loadgen.load(port, clients=2, warmup=0.05, duration=0.2)

    result = asyncio.run(run())
    assert result["requests"] > 0 and result["rps"] == result["requests"] / 0.2
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert (result["errors"] == result["requests"]) if failed else result["errors"] == 0


def test_batch_totals_read_the_histogram() -> None:
    text = '# HELP x\nqipo_batch_size_bucket{le="1"} 3\nqipo_batch_size_sum 12.0\nqipo_batch_size_count 4.0\n'
    assert loadgen.batch_totals(text) == (12.0, 4.0)
    assert loadgen.batch_totals("") == (0.0, 0.0)


def test_cpu_seconds_of_a_process_grow_with_its_work() -> None:
    before = loadgen.cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert loadgen.cpu_seconds(os.getpid()) > before


def test_children_import_service_from_the_source_tree_first(tmp_path: Path) -> None:
    env = loadgen.child_env(tmp_path)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
    assert loadgen.CHILD.name == "serve_child.py" and loadgen.CHILD.exists()
    with pytest.raises(SystemExit, match="unknown command"):
        serve_child.main(["profile", "floor"])


def test_the_floor_called_in_process_costs_thread_cpu_per_request() -> None:
    one = inproc.asgi_caller(floor_app(), "floor")
    out = asyncio.run(inproc.run_levels(one, inproc.OnnxClock(), 20, (1, 4)))
    assert set(out["us_per_req"]) == {"1", "4"} and all(v > 0 for v in out["us_per_req"].values())
    assert out["onnx_us_per_req"] == {"1": 0.0, "4": 0.0}  # the floor runs no model


def test_onnx_clock_counts_time_inside_the_session() -> None:
    class Session:
        def run(self, *args: Any) -> int:
            sum(i for i in range(100_000))
            return 7

    class Policy:
        session = Session()

    clock, policy = inproc.OnnxClock(), Policy()
    clock.attach(policy)
    assert policy.session.run() == 7 and clock.ns > 0


def test_inproc_specs_and_medians() -> None:
    specs = serve_bench.server_specs(["default:inline", "small:thread"], Path("/old"))
    assert specs["baseline:default:inline"] == ("baseline", "default", "inline", Path("/old").resolve())
    assert list(inproc.inproc_apps(specs)) == ["floor", "default:inline", "baseline:default:inline"]
    runs = [{"us_per_req": {"1": v}} for v in (3.0, 1.0, 2.0)]
    assert inproc.medians(runs) == {"us_per_req": {"1": 2.0}}


def test_profile_summary_shares_cpu_by_function_and_package(tmp_path: Path) -> None:
    raw = tmp_path / "p.collapsed"
    raw.write_text(
        "run (uvloop/loop.py:1);act (service/act.py:10);infer (onnxruntime/s.py:5) 6\n"
        "run (uvloop/loop.py:1);act (service/act.py:10) 2\n"
        "_find_and_load (<frozen importlib>:1);x (json/x.py:1) 2\n"
    )
    prof = serve_profile.summarize_profile(raw, cpu_us_per_req=100.0)
    assert prof["samples"] == 10
    assert prof["self"][0] == {
        "name": "infer (onnxruntime/s.py:5)",
        "us_per_req": 60.0,
        "share": 0.6,
        "total_us_per_req": 60.0,
    }
    assert {p["name"]: p["us_per_req"] for p in prof["packages"]} == {
        "onnxruntime": 60.0,
        "service": 20.0,
        "json (stdlib)": 20.0,
    }
    measured = serve_profile.summarize_profile(raw, 100.0, without=(";_find_and_load (",))
    assert measured["samples"] == 8
    serve_profile.keep_stacks(raw, ";run (uvloop/", (";_find_and_load (",))
    assert len(raw.read_text().splitlines()) == 2
    md = serve_profile.profile_markdown({"floor": {**prof, "requests": 5}}, meta())
    assert "## floor: 100 µs CPU per request (10 samples, 5 requests)" in md


def meta() -> dict[str, Any]:
    return {
        "when": "2026-01-01 00:00 UTC",
        "machine": "x86_64, 2 CPUs",
        "loadavg_at_start": [1.0, 1.0, 1.0],
        "loadavg_at_end": [1.5, 1.0, 1.0],
        "duration_s": 5.0,
        "warmup_s": 1.0,
        "inproc_requests": 100,
        "inproc_repeats": 1,
    }


SAMPLER = {
    "small": [
        {"batch": 1, "onnx_ms": 0.1, "torch_eager_ms": 0.5, "speedup": 5.0},
        {"batch": 64, "onnx_ms": 1.28},
    ]
}


def record(server: str, clients: int, rps: float, cpu: float, mean_batch: float | None) -> dict[str, Any]:
    return {
        "server": server,
        "model": None if server == "floor" else "small",
        "executor": None if server == "floor" else "inline",
        "clients": clients,
        "rps": rps,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "mean_batch": mean_batch,
        "server_cpu_us_per_req": cpu,
        "requests": 100,
        "errors": 0,
    }


def test_overhead_ratios_goals_and_report(tmp_path: Path) -> None:
    assert sampler_us_per_row(SAMPLER["small"], 1.0) == pytest.approx(100.0)
    assert sampler_us_per_row(SAMPLER["small"], 64.0) == pytest.approx(20.0)
    records = [
        record("floor", 1, 1000.0, 50.0, None),
        record("qipo", 1, 900.0, 190.0, 1.0),  # 190 - 50 - 100 = 40 µs of serving code
        record("floor", 64, 2000.0, 30.0, None),
        record("qipo", 64, 1000.0, 70.0, 64.0),  # 70 - 30 - 20 = 20 µs: over the 15 µs goal
    ]
    serve_report.add_overhead(records, SAMPLER)
    assert [r.get("overhead_us_per_req") for r in records] == [
        None,
        pytest.approx(40.0),
        None,
        pytest.approx(20.0),
    ]
    result = serve_report.ratios(records, SAMPLER)
    small = result["small:inline"]
    assert small["by_clients"]["64"]["rps_ratio"] == 0.5
    assert small["goals"]["overhead_1_le_60us"] is True
    assert small["goals"]["overhead_64_le_15us"] is False
    assert small["goals"]["rps_64_ge_0.85x_floor"] is False
    assert small["goals"]["onnx_ge_3x_torch_batch1"] is True
    inproc_result = {
        "floor": {"model": None, "us_per_req": {"1": 40.0}, "onnx_us_per_req": {"1": 0.0}},
        "small:inline": {"model": "small", "us_per_req": {"1": 170.0}, "onnx_us_per_req": {"1": 90.0}},
    }
    serve_report.add_inproc_overhead(inproc_result, SAMPLER)
    assert inproc_result["small:inline"]["overhead_us_per_req"] == {"1": pytest.approx(30.0)}
    assert inproc_result["small:inline"]["python_overhead_us_per_req"] == {"1": pytest.approx(40.0)}
    full = {"meta": meta(), "records": records, "inproc": inproc_result, "ratios": result, "sampler": SAMPLER}
    serve_report.write_report(tmp_path, full)
    md = (tmp_path / "serve.md").read_text()
    assert "| qipo | small | inline | 64 | 1000 | 1000 | 1.00 | 2.00 | 64.0 | 70 | 20 | 20 |" in md
    assert "overhead_64_le_15us: NOT met" in md and "| small | 1 | 0.100 | 0.500 | 5.0× |" in md
    assert json.loads((tmp_path / "serve.json").read_text())["ratios"] == json.loads(json.dumps(result))
    inproc_md = serve_report.inproc_markdown({"meta": meta(), "inproc": inproc_result, "sampler": SAMPLER})
    assert "| small:inline | small | 1 | 170 | 90 |  | 30 | 40 |" in inproc_md


def test_chunk_rows_count_actions_against_one_action_default_of_the_same_level() -> None:
    records = [
        record("floor", 64, 2000.0, 30.0, None),
        record("qipo", 64, 1000.0, 70.0, 30.0) | {"model": "default", "actions_per_s": 1000.0},
        record("qipo", 64, 600.0, 90.0, 30.0)
        | {"model": "chunk8", "action_horizon": 8, "actions_per_s": 4800.0, "p99_ms": 3.0},
        record("qipo", 16, 700.0, 90.0, 8.0)  # no `default` at 16 clients: no row
        | {"model": "chunk8", "action_horizon": 8, "actions_per_s": 5600.0},
    ]
    (row,) = serve_report.chunk_rows(records)
    assert row["clients"] == 64 and row["actions_ratio"] == pytest.approx(4.8)
    assert row["p99_ms"] == 3.0 and row["single_p99_ms"] == 2.0
    md = "\n".join(serve_report.chunk_lines(records))
    assert "| chunk8 | inline | 64 | 8 | 4800 | 1000 | 4.8× | 3.00 | 2.00 |" in md


def test_a_chunked_bench_artifact_answers_h_actions(tmp_path: Path) -> None:
    from loadtests.sampler import ARCHS, build_artifact
    from service.runtime import OnnxPolicy

    build_artifact(tmp_path, ARCHS["chunk8"])
    policy = OnnxPolicy.load(tmp_path)
    assert policy.metadata.action_horizon == 8
    assert policy.infer(np.zeros((2, 3), np.float32)).shape == (2, 8, 1)


def test_a_floor_server_child_starts_answers_and_stops(tmp_path: Path) -> None:
    """The child runs by path (so `service` would come from PYTHONPATH) and still finds `loadtests`."""
    proc, port = loadgen.start_server("floor", tmp_path, tmp_path / "cache", "inline")
    try:
        result, cpu = asyncio.run(loadgen.load_with_cpu(proc.pid, port, 1, warmup=0.1, duration=0.3))
    finally:
        loadgen.stop_server(proc)
    assert result["requests"] > 0 and result["errors"] == 0 and cpu >= 0
    assert proc.returncode is not None
