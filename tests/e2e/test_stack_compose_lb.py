"""The compose balancer (deploy/nginx/nginx.conf) run for real, outside Docker: Docker's DNS is replaced by a
dnsmasq that answers `api` with two loopback addresses, each running a `qipo serve` replica on the same port,
as compose's replicas do. Only the listen port, pid file, resolver address and API port are rewritten. nginx
must spread requests over both DNS answers, and a replica killed mid-run must cost no failed request."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.registry.redis_registry import RedisRegistry
from tests.e2e.fleet import free_port
from tests.service.registry_fixtures import MODEL, REDIS_URL, artifacts, redis_registry  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
REPLICA_HOSTS = ("127.0.0.2", "127.0.0.3")

# Needs Debian's nginx and dnsmasq (`make stack-deps`), which CI installs only after `make test`.
pytestmark = pytest.mark.slow


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {seconds:.0f} s")


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def compose_nginx_conf(dest: Path, lb_port: int, dns_port: int, api_port: int) -> Path:
    """deploy/nginx/nginx.conf with only the host-specific lines rewritten (each must match exactly once)."""
    text = (ROOT / "deploy/nginx/nginx.conf").read_text()
    for old, new in {
        "listen 8080;": f"listen 127.0.0.1:{lb_port};",
        "pid /tmp/nginx.pid;": f"pid {dest}/nginx.pid;",
        "resolver 127.0.0.11 ": f"resolver 127.0.0.1:{dns_port} ",
        'default "api:8000";': f'default "api:{api_port}";',
    }.items():
        assert text.count(old) == 1, f"deploy/nginx/nginx.conf no longer has exactly one {old!r}"
        text = text.replace(old, new)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "deploy/nginx/qipo-proxy.conf", dest / "qipo-proxy.conf")
    (dest / "nginx.conf").write_text(text)
    return dest / "nginx.conf"


def test_compose_balancer_round_robins_dns_answers_and_retries_a_dead_replica(
    artifacts: list[Path],  # noqa: F811
    redis_registry: RedisRegistry,  # noqa: F811
    tmp_path: Path,
) -> None:
    for tool in ("nginx", "dnsmasq"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; run `make stack-deps`")
    redis_registry.promote(MODEL, "production", redis_registry.publish(artifacts[0]).version)
    lb_port, dns_port, api_port = free_port(), free_udp_port(), free_port()
    conf = compose_nginx_conf(tmp_path / "nginx", lb_port, dns_port, api_port)
    qipo = str(Path(sys.executable).parent / "qipo")
    with processes() as procs:
        procs.append(subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--listen-address=127.0.0.1",
             f"--port={dns_port}", "--bind-interfaces", "--no-resolv", "--no-hosts",
             *[f"--host-record=api,{host}" for host in REPLICA_HOSTS], "--pid-file=/dev/null"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "dnsmasq.log").open("wb"),
        ))  # fmt: skip
        for i, host in enumerate(REPLICA_HOSTS):
            env = os.environ | {
                "QIPO_REGISTRY": REDIS_URL,
                "QIPO_REGISTRY_PREFIX": redis_registry.prefix,
                "QIPO_CACHE_DIR": str(tmp_path / f"cache{i}"),
                "QIPO_LOG_LEVEL": "warning",
            }
            log = (tmp_path / f"api{i}.log").open("wb")
            procs.append(subprocess.Popen([qipo, "serve", "--host", host, "--port", str(api_port)], env=env,
                                          stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        for host in REPLICA_HOSTS:
            wait_for(f"http://{host}:{api_port}/readyz", 60)
        procs.append(subprocess.Popen(
            ["nginx", "-g", "daemon off;", "-c", str(conf), "-e", str(tmp_path / "nginx-error.log")],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "nginx.log").open("wb"),
        ))  # fmt: skip
        lb = f"http://127.0.0.1:{lb_port}"
        wait_for(f"{lb}/lb-health", 10)

        body = {"state": [1.0, 0.0, 0.0]}
        with httpx.Client(base_url=lb, timeout=5) as client:
            first = [client.post("/act", json=body) for _ in range(60)]
            assert [r.status_code for r in first] == [200] * 60, [
                r.text for r in first if r.status_code != 200
            ]
            served = Counter(r.headers["x-upstream"] for r in first)
            assert set(served) == {f"{host}:{api_port}" for host in REPLICA_HOSTS}, served

            procs[1].kill()  # the replica on 127.0.0.2 dies without a goodbye
            procs[1].wait(5)
            after = [client.post("/act", json=body) for _ in range(60)]
        assert [r.status_code for r in after] == [200] * 60, [r.text for r in after if r.status_code != 200]
        assert {r.headers["x-upstream"].split(", ")[-1] for r in after} == {f"127.0.0.3:{api_port}"}
