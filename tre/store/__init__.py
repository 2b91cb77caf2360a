"""The state store: SQLAlchemy repositories, Alembic migrations, and the hash-chained audit log."""

from tre.store._airlock import StoredBallot, StoredCheck, StoredFile, StoredOverride, StoredRequest, StoredRules
from tre.store._audit import GENESIS_HASH, AuditEntry, AuditLog, VerifyResult, canonical_json, entry_hash
from tre.store._database import Store, Unit, head_revision, sqlite_url
from tre.store._repositories import Extract, OptOutVersion, StoredDataset, StoredProject

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditLog",
    "Extract",
    "OptOutVersion",
    "Store",
    "StoredBallot",
    "StoredCheck",
    "StoredDataset",
    "StoredFile",
    "StoredOverride",
    "StoredProject",
    "StoredRequest",
    "StoredRules",
    "Unit",
    "VerifyResult",
    "canonical_json",
    "entry_hash",
    "head_revision",
    "sqlite_url",
]
