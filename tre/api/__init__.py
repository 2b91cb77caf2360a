"""The HTTP API: the airlock under /api/v1/airlock, /healthz and /metrics; identity is pluggable."""

from tre.api._identity import HubIdentity, Identity, TokenIdentity, bearer_token
from tre.api.app import PREFIX, create_app

__all__ = ["PREFIX", "HubIdentity", "Identity", "TokenIdentity", "bearer_token", "create_app"]
