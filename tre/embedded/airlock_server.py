"""The airlock API as a JupyterHub service: ``python -m tre.embedded.airlock_server --port P --hub-api URL``.

The hub's proxy forwards ``/services/airlock/…`` with the path unchanged, so the API answers both there
and at the root (for direct loopback use). Callers may use TRE tokens or JupyterHub tokens.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI

from tre.api import HubIdentity, create_app
from tre.config import Settings
from tre.storage import open_object_store
from tre.store import Store

SERVICE_PREFIX = "/services/airlock"


def build_app(settings: Settings, hub_api_url: str) -> FastAPI:
    store = Store(settings.store_url)
    store.migrate()
    objects = open_object_store(settings.objects_url, endpoint_url=settings.s3_endpoint_url)
    inner = create_app(store, objects, identity=HubIdentity(hub_api_url))
    outer = FastAPI(title=inner.title, version=inner.version, docs_url=None, redoc_url=None, openapi_url=None)
    outer.mount(SERVICE_PREFIX, inner)
    outer.mount("/", inner)
    return outer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--host", default="127.0.0.1", help="Address to listen on (tre up: the sandboxes' hub address)."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hub-api", required=True, help="JupyterHub's API URL, e.g. http://127.0.0.1:8081/hub/api")
    arguments = parser.parse_args(argv)
    app = build_app(Settings(), arguments.hub_api)
    uvicorn.run(app, host=arguments.host, port=arguments.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
