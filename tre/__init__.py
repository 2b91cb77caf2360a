"""TRE orchestrator: approved projects become isolated workspaces; outputs leave only through a checked airlock."""

__version__ = "0.1.0"
