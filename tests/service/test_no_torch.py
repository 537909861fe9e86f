"""The serving package imports and builds its app with torch and `training` unimportable."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('torch', 'training'):
            raise ImportError(f'{name} is blocked in this test')
sys.meta_path.insert(0, Block())
"""


def test_service_app_imports_without_torch() -> None:
    code = BLOCKER + (
        "import service.app, service.cli, service.registry, qipo_client\n"
        "from service.settings import ServeSettings\n"
        "service.app.create_app(ServeSettings(registry='/tmp/qipo-no-torch-registry'))\n"
        "assert 'torch' not in sys.modules and 'training' not in sys.modules, sorted(sys.modules)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
