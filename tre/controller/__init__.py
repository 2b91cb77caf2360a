"""Cluster mode: the pure planning core of the Kubernetes controller (manifests, reconcile plans, the CRD)."""

from tre.controller._config import ClusterConfig

__all__ = ["ClusterConfig"]
