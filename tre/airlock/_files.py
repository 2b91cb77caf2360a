"""Files in a request: safe names, kinds, and what a checker sees of them."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from tre.errors import InputError

MAX_NAME_LENGTH = 200
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._()+=-]*$")
_RESERVED = {"CITATION.txt", "decision.json"}


class FileKind(StrEnum):
    OUTPUT = "output"  # to be released
    SUPPORTING = "supporting"  # evidence for the checkers (e.g. unrounded counts), never released
    CODE = "code"  # the code that made the outputs, for the checkers


class TableKind(StrEnum):
    """What the author declares a table to be, so the automated checks know which rules apply (tre.sdc)."""

    FREQUENCY = "frequency"  # every value cell is a count of people: threshold and zeros are recomputed


@dataclass(frozen=True)
class RequestFile:
    name: str
    kind: FileKind
    sha256: str
    size: int


def check_file_name(name: str) -> str:
    """A plain file name: no directories, no traversal, no control or look-alike characters, not reserved."""
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InputError(f"file name must be 1 to {MAX_NAME_LENGTH} characters")
    if "/" in name or "\\" in name or name in {".", ".."}:
        raise InputError(f"file name {name!r} must be a plain name, without directories")
    if unicodedata.normalize("NFKC", name) != name or not name.isascii() or not _SAFE_NAME.match(name):
        raise InputError(f"file name {name!r} may use only letters, digits, spaces and ._()+=- and start with a letter")
    if name in _RESERVED:
        raise InputError(f"file name {name!r} is reserved for the release record")
    return name
