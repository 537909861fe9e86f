"""The OpenAPI schema with the served model's dimensions, and Swagger UI served from a package.

`/docs` loads its JavaScript and CSS from `/docs/static/` (the `swagger-ui-bundle-v2` package, Swagger UI 5,
which reads the OpenAPI 3.1 FastAPI writes), never from a CDN, so it works on a robot network with no
internet. ReDoc has no packaged assets and is off.
"""

from __future__ import annotations

import copy
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.models import ModelManager

DOCS = "/docs"
STATIC = f"{DOCS}/static"


def add_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs from the packaged assets (create the app with docs_url=None)."""
    app.mount(STATIC, StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)), name="swagger-ui")
    oauth2 = f"{DOCS}/oauth2-redirect"

    @app.get(DOCS, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC}/favicon-32x32.png",
            oauth2_redirect_url=oauth2,
        )

    @app.get(oauth2, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def openapi_with_dims(app: FastAPI, manager: ModelManager) -> dict[str, Any]:
    """The OpenAPI schema with `state` pinned to the served model's obs_dim, so clients (and schemathesis)
    see the exact shape; rebuilt per call because a hot reload may change the model."""
    schema = copy.deepcopy(FastAPI.openapi(app))
    model = manager.current
    if model is None:
        return schema
    dim = {"minItems": model.policy.metadata.obs_dim, "maxItems": model.policy.metadata.obs_dim}
    body = schema["paths"]["/act"]["post"]["requestBody"]["content"]["application/json"]
    props = body["schema"]["properties"]
    props["state"]["anyOf"][0] |= dim
    props["states"]["anyOf"][0]["items"] |= dim
    return schema
