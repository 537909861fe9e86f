"""qipo-client (clients/python) against the real server: its own live tests, run against this module's
server; the client imports nothing of the server; and the closed loop through the server equals the
in-process one, because both sides draw noise by the contract's seed rule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Running

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"


def test_client_imports_without_the_server_stack() -> None:
    code = (
        "import sys\n"
        "for name in ('fastapi', 'starlette', 'uvicorn', 'redis', 'onnxruntime', 'torch', 'service'):\n"
        "    sys.modules[name] = None\n"
        "import qipo_client, qipo_client.ws\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_client_suite_passes_against_a_live_server(server: Running) -> None:
    """The same tests `make test-client` runs from a venv holding qipo-client alone."""
    env = os.environ | {"QIPO_SERVER_URL": server.url}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", str(CLIENT)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=CLIENT,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout


def test_closed_loop_eval_through_server_equals_in_process(server: Running, serve_artifact: Path) -> None:
    pytest.importorskip("gymnasium")
    from qipo_client import RemotePolicy

    from service.runtime import OnnxPolicy
    from training.eval import evaluate

    local = evaluate(OnnxPolicy.load(serve_artifact), "Pendulum-v1", episodes=3, seed=7, progress=False)
    with RemotePolicy(server.url) as remote:
        through = evaluate(remote, "Pendulum-v1", episodes=3, seed=7, progress=False)
    assert through["returns"] == local["returns"]
    assert through["mean_return"] == local["mean_return"]
