"""The JupyterHub configuration ``tre up`` writes: TRE users, the sandbox spawner, the airlock as a service.

Secrets are not written into the file: it reads them at start from ``hub/secrets.json`` (0600), so the
config can be shown to anyone. The proxy is the Python configurable-http-proxy, so no Node is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tre.embedded._layout import Layout, Ports
from tre.embedded._process import Child, installed_command

AIRLOCK_SERVICE = "airlock"
CONTROLLER_SERVICE = "tre-controller"


@dataclass(frozen=True)
class HubSettings:
    """What the hub config needs from ``tre up``."""

    layout: Layout
    ports: Ports
    store_url: str
    hub_address: str = "127.0.0.1"
    public_ip: str = "127.0.0.1"
    spawner_class: str = "tre.workspaces.local_spawner.SandboxSpawner"
    spawner_config: tuple[tuple[str, object], ...] = ()


def config_text(settings: HubSettings) -> str:
    """The jupyterhub_config.py for these settings (pure: tested without starting a hub)."""
    layout, ports = settings.layout, settings.ports
    spawner_lines = "".join(
        f"c.{settings.spawner_class.rpartition('.')[2]}.{name} = {value!r}\n" for name, value in settings.spawner_config
    )
    roles = [
        {
            "name": "tre-controller",
            "scopes": ["admin:users", "admin:servers", "tokens", "list:users", "read:users"],
            "services": [CONTROLLER_SERVICE],
        },
        {"name": "user", "scopes": ["self", f"access:services!service={AIRLOCK_SERVICE}"]},
    ]
    return f'''# Written by 'tre up' at every start; edits are overwritten. Secrets are read from secrets.json.
import json

c = get_config()  # noqa: F821
with open({str(layout.hub_secrets)!r}, encoding="utf-8") as handle:
    secrets = json.load(handle)

c.JupyterHub.bind_url = "http://{settings.public_ip}:{ports.hub}"
c.JupyterHub.hub_bind_url = "http://{settings.hub_address}:{ports.hub_api}"
c.JupyterHub.db_url = "sqlite:///{layout.hub / "jupyterhub.sqlite"}"
c.JupyterHub.cookie_secret = bytes.fromhex(secrets["cookie_secret"])
c.JupyterHub.pid_file = {str(layout.run / "jupyterhub.pid")!r}
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
c.ConfigurableHTTPProxy.command = [{installed_command("configurable-http-proxy")!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{ports.proxy_api}"
c.ConfigurableHTTPProxy.auth_token = secrets["proxy_auth_token"]
c.ConfigurableHTTPProxy.should_start = True

c.JupyterHub.authenticator_class = "tre.embedded.hub_auth.TreAuthenticator"
c.TreAuthenticator.database_url = {settings.store_url!r}
c.TreAuthenticator.any_allow_config = True  # check_allowed asks the TRE store

c.JupyterHub.spawner_class = {settings.spawner_class!r}
c.Spawner.default_url = "/lab"
c.Spawner.environment = {{"TRE_AIRLOCK_URL": "http://{settings.hub_address}:{ports.airlock}/services/airlock"}}
{spawner_lines}
c.JupyterHub.services = [
    {{"name": "{AIRLOCK_SERVICE}", "url": "http://{settings.hub_address}:{ports.airlock}",
     "api_token": secrets["airlock_service_token"], "display": True}},
    {{"name": "{CONTROLLER_SERVICE}", "api_token": secrets["controller_service_token"]}},
]
c.JupyterHub.load_roles = {json.dumps(roles)}
'''


def hub_child(settings: HubSettings, env: dict[str, str]) -> Child:
    layout = settings.layout
    config = layout.hub / "jupyterhub_config.py"
    config.write_text(config_text(settings), encoding="utf-8")
    config.chmod(0o600)
    argv = [installed_command("jupyterhub"), "-f", str(config)]
    return Child("JupyterHub", argv, layout.logs / "jupyterhub.log", env=env, cwd=layout.hub)
