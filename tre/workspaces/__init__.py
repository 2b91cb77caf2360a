"""Workspace backends: the local sandbox spawner (embedded mode) and Kubernetes manifests (cluster mode)."""
