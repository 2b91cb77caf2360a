"""First-start administration of the embedded OpenBao: initialise once, unseal on every start.

Single-machine grade: one unseal key share, kept with the root token in a 0600 file under ``TRE_HOME``.
Whoever can read that file owns every secret; on a shared or production server use a real Vault with
auto-unseal instead (documented in docs/explanation/embedded-mode.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hvac  # type: ignore[import-untyped]
import hvac.exceptions  # type: ignore[import-untyped]
import requests

from tre.errors import IntegrityError, TemporaryError
from tre.private_files import write_private

__all__ = ["initialise_and_unseal"]


def initialise_and_unseal(url: str, keys_file: Path, token_file: Path, *, timeout: float = 60.0) -> None:
    """Initialise OpenBao on first start (saving its key and root token), then unseal it.

    The root token goes to ``token_file`` (mode 0600) for ``TRE_VAULT_TOKEN_FILE``; the init material
    (unseal key and root token) to ``keys_file`` (mode 0600). Both are written atomically, before the
    server is used, so a crash right after initialisation never loses the only copy of the key.
    """
    client = hvac.Client(url=url, timeout=timeout)
    try:
        if not client.sys.is_initialized():
            material = client.sys.initialize(secret_shares=1, secret_threshold=1)
            write_private(keys_file, json.dumps(_init_record(material), indent=2))
        record = _read_record(keys_file)
        if client.sys.is_sealed():
            client.sys.submit_unseal_key(record["unseal_key"])
        write_private(token_file, record["root_token"])
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TemporaryError(f"OpenBao at {url} did not answer ({type(exc).__name__})") from None
    except hvac.exceptions.VaultError as exc:
        raise TemporaryError(f"OpenBao at {url} refused initialisation or unsealing: {_first_error(exc)}") from None


def _init_record(material: Any) -> dict[str, str]:
    try:
        return {"unseal_key": material["keys_base64"][0], "root_token": material["root_token"]}
    except (KeyError, IndexError, TypeError):
        raise IntegrityError("OpenBao's initialisation answer has no key or root token") from None


def _read_record(keys_file: Path) -> dict[str, str]:
    try:
        record = json.loads(keys_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IntegrityError(
            f"OpenBao is initialised but {keys_file} is missing: its unseal key is lost; "
            "restore the file from a backup (the vault data cannot be opened without it)"
        ) from None
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{keys_file}: cannot read OpenBao's unseal key ({exc})") from None
    if not isinstance(record, dict) or not {"unseal_key", "root_token"} <= record.keys():
        raise IntegrityError(f"{keys_file}: not an OpenBao key file written by 'tre up'")
    return {"unseal_key": str(record["unseal_key"]), "root_token": str(record["root_token"])}


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors:
        return str(errors[0])[:200]
    return type(exc).__name__
