"""The client distribution alone against a live server (`make test-client`, run by CI).

Builds a tiny Pendulum-shaped artifact (an untrained policy, exported by the real exporter), serves it
with real uvicorn on 127.0.0.1, and runs clients/python's own tests with the interpreter of a venv that
holds qipo-client and nothing of the server (that venv is `--python`; `make test-client` makes it).

    python scripts/client_check.py --python build/client-venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the test helpers build the artifact and run the server


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--python", type=Path, required=True, help="Interpreter of the venv holding qipo-client alone"
    )
    args = parser.parse_args()

    from service.app import create_app
    from service.registry import open_registry
    from tests.helpers import running_server
    from tests.service.conftest import MODEL, build_artifact, serve_settings

    with tempfile.TemporaryDirectory(prefix="qipo-client-check-") as tmp:
        work = Path(tmp)
        registry = open_registry(str(work / "registry"), "qipo")
        version = registry.publish(build_artifact(work / "artifact"))
        registry.promote(MODEL, "production", version.version)
        app = create_app(serve_settings(work / "registry", work / "cache"))
        with running_server(app) as server:
            env = os.environ | {"QIPO_SERVER_URL": server.url, "QIPO_CLIENT_ALONE": "1"}
            command = [str(args.python.absolute()), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            print(f"client tests against {server.url}: {' '.join(command)}", flush=True)
            return subprocess.run(command, cwd=ROOT / "clients" / "python", env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
