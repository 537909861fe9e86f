"""Admin routes on a real replica: bearer token required (401 without, 403 wrong), disabled without one."""

from __future__ import annotations

from pathlib import Path

import httpx

from service.registry.redis_registry import RedisRegistry
from tests.e2e.fleet import replicas
from tests.service.registry_fixtures import MODEL

TOKEN = "s3cret-admin-token"


def test_admin_auth_reload_and_promote(
    redis_registry: RedisRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    for art in artifacts:
        redis_registry.publish(art)
    redis_registry.promote(MODEL, "production", 1)
    env = {"QIPO_ADMIN_TOKEN": TOKEN}
    with replicas(1, redis_registry.url, redis_registry.prefix, tmp_path, **env) as (rep,):
        no_header = httpx.post(f"{rep.url}/admin/reload", timeout=5)
        assert no_header.status_code == 401 and no_header.headers["www-authenticate"] == "Bearer"
        wrong = httpx.post(f"{rep.url}/admin/reload", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 403 and "wrong" in wrong.json()["detail"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ok = httpx.post(f"{rep.url}/admin/reload", headers=auth, timeout=10)
        assert ok.status_code == 200 and ok.json()["version"] == 1

        moved = httpx.post(f"{rep.url}/admin/promote", json={"ref": "2"}, headers=auth, timeout=30)
        assert moved.status_code == 200, moved.text
        assert moved.json()["move"]["to_version"] == 2 and moved.json()["replica"]["version"] == 2
        stale = httpx.post(
            f"{rep.url}/admin/promote", json={"ref": "3", "expected": 1}, headers=auth, timeout=10
        )
        assert stale.status_code == 409 and "someone moved it first" in stale.json()["detail"]
        missing = httpx.post(f"{rep.url}/admin/promote", json={"ref": "9"}, headers=auth, timeout=10)
        assert missing.status_code == 404
        unauth = httpx.post(f"{rep.url}/admin/promote", json={"ref": "3"}, timeout=10)
        assert unauth.status_code == 401
        canary = httpx.post(
            f"{rep.url}/admin/promote",
            json={"ref": "3", "alias": "canary", "canary_share": 0.5},
            headers=auth,
        )
        assert canary.status_code == 200 and canary.json()["replica"]["canary"] == {
            "version": 3,
            "share": 0.5,
        }
    assert redis_registry.aliases(MODEL) == {"production": 2, "canary": 3}
    assert [m.to_version for m in redis_registry.history(MODEL, "production")] == [1, 2]


def test_admin_disabled_without_token(
    redis_registry: RedisRegistry, artifacts: list[Path], tmp_path: Path
) -> None:
    redis_registry.publish(artifacts[0])
    redis_registry.promote(MODEL, "production", 1)
    with replicas(1, redis_registry.url, redis_registry.prefix, tmp_path) as (rep,):
        resp = httpx.post(f"{rep.url}/admin/reload", headers={"Authorization": "Bearer anything"}, timeout=5)
    assert resp.status_code == 403 and "QIPO_ADMIN_TOKEN" in resp.json()["detail"]
