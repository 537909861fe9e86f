"""`make demo`'s last step (loadtests/act_demo.py) against a mock transport: waits for /readyz, then prints
each /act answer and stops at the first error."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from loadtests import act_demo


def client(ready_after: int, act_status: int = 200) -> tuple[httpx.Client, list[str]]:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.url.path == "/readyz":
            if seen.count("GET /readyz") <= ready_after:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(200, json={"status": "ready"})
        return httpx.Response(act_status, json={"action": [0.5]})

    return httpx.Client(transport=httpx.MockTransport(handle)), seen


def test_waits_for_ready_then_shows_every_answer(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(act_demo.time, "sleep", lambda _: None)
    http, seen = client(ready_after=2)
    assert act_demo.wait_ready(http, "http://x", timeout=30)
    assert act_demo.show_answers(http, "http://x")
    assert seen == ["GET /readyz"] * 3 + ["POST /act"] * len(act_demo.BODIES)
    out = capsys.readouterr().out
    assert "GET /readyz -> {'status': 'ready'}" in out and '"request_id": "batch"' in out


def test_stops_at_the_first_error_answer() -> None:
    http, seen = client(ready_after=0, act_status=422)
    assert not act_demo.show_answers(http, "http://x")
    assert seen == ["POST /act"]


def test_never_ready_prints_the_server_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(act_demo.time, "sleep", lambda _: None)
    (tmp_path / "serve.log").write_text("Traceback: no model")
    http, _ = client(ready_after=10**9)
    assert not act_demo.wait_ready(http, "http://x", timeout=0.0, log=tmp_path / "serve.log")
    err = capsys.readouterr().err
    assert "http://x was not ready after 0s" in err and "Traceback: no model" in err


def test_arguments() -> None:
    args = act_demo.parse_args(["http://127.0.0.1:8000", "--log", "s.log"])
    assert (args.url, args.log, args.timeout) == ("http://127.0.0.1:8000", Path("s.log"), 60.0)
