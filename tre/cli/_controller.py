"""``tre controller``: review what the controller would apply, and run it."""

from __future__ import annotations

import typer

controller_app = typer.Typer(help="Cluster mode: the Kubernetes controller.", no_args_is_help=True)
