"""Embedded mode: ``tre up`` runs OpenBao, the airlock API, JupyterHub and the controller on one machine."""

from tre.embedded._layout import Layout, Ports
from tre.embedded._up import UpOptions
from tre.embedded._up import up as run_up

__all__ = ["Layout", "Ports", "UpOptions", "run_up"]
