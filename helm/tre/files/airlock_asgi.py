"""The airlock API for uvicorn's ``--factory`` flag, configured from the ``TRE_*`` environment.

Mounted into the airlock pods by the chart (ConfigMap ``<release>-airlock-asgi``) and started with
``uvicorn --app-dir /opt/tre/asgi --factory airlock_asgi:app``. The hub's proxy forwards
``/services/airlock/...`` with the path unchanged, so the API answers there as well as at the root. With
``TRE_HUB_API_URL`` set, JupyterHub tokens (a workspace's own) are accepted besides TRE tokens.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from tre.api import HubIdentity, create_app
from tre.config import Settings
from tre.storage import open_object_store
from tre.store import Store

SERVICE_PREFIX = "/services/airlock"


def app() -> FastAPI:
    settings = Settings()
    store = Store(settings.store_url)
    store.migrate()
    objects = open_object_store(settings.objects_url, endpoint_url=settings.s3_endpoint_url)
    hub_api = os.environ.get("TRE_HUB_API_URL")
    inner = create_app(store, objects, identity=HubIdentity(hub_api) if hub_api else None)
    outer = FastAPI(title=inner.title, version=inner.version, docs_url=None, redoc_url=None, openapi_url=None)
    outer.mount(SERVICE_PREFIX, inner)
    outer.mount("/", inner)
    return outer
