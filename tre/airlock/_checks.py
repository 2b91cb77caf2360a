"""Automated checks on every file in a request, by content (never by extension alone). Pure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from tre.governance.nhs_number import find_nhs_numbers

TEXT_TYPES = {"csv", "tsv", "txt", "md", "json"}
BINARY_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"%PDF-": "pdf"}
ARCHIVE_SIGNATURES = {
    b"PK\x03\x04": "zip",
    b"\x1f\x8b": "gzip",
    b"7z\xbc\xaf\x27\x1c": "7z",
    b"Rar!": "rar",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x7fELF": "executable",
    b"MZ": "executable",
}
_EXTENSION_ALIASES = {"jpg": "jpeg", "markdown": "md"}


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a check status, not a password
    REVIEW = "review"  # a checker must look, and may override with a rationale
    FAIL = "fail"  # returned to the author


@dataclass(frozen=True)
class CheckResult:
    rule: str
    status: Status
    detail: str


def content_type(data: bytes) -> str:
    """What the bytes are: png, jpeg, pdf, an archive or executable kind, 'text', or 'binary'."""
    for signature, kind in (BINARY_SIGNATURES | ARCHIVE_SIGNATURES).items():
        if data.startswith(signature):
            return kind
    if b"ustar" in data[257:263]:
        return "tar"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "text"


def _extension(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower().lstrip(".")
    return _EXTENSION_ALIASES.get(suffix, suffix)


def type_check(name: str, data: bytes) -> CheckResult:
    kind, extension = content_type(data), _extension(name)
    if kind in ARCHIVE_SIGNATURES.values() or kind == "tar":
        return CheckResult("file-type", Status.FAIL, f"{kind} files cannot leave the TRE: submit their contents")
    if kind == "text" and extension == "ipynb":
        return _notebook_check(data)
    if kind == "text" and extension in TEXT_TYPES:
        return _text_check(extension, data)
    if kind in BINARY_SIGNATURES.values() and kind == extension:
        return CheckResult("file-type", Status.PASS, kind)
    if kind in BINARY_SIGNATURES.values() or kind == "text":
        return CheckResult("file-type", Status.REVIEW, f"content is {kind} but the name ends .{extension or '(none)'}")
    return CheckResult("file-type", Status.REVIEW, "binary content of an unknown type: a checker must override")


def _text_check(extension: str, data: bytes) -> CheckResult:
    if extension == "json":
        try:
            json.loads(data)
        except ValueError:
            return CheckResult("file-type", Status.FAIL, "named .json but is not valid JSON")
    return CheckResult("file-type", Status.PASS, extension)


def _notebook_check(data: bytes) -> CheckResult:
    try:
        cells = json.loads(data).get("cells", [])
    except (ValueError, AttributeError):
        return CheckResult("file-type", Status.FAIL, "named .ipynb but is not a notebook")
    with_outputs = sum(1 for c in cells if isinstance(c, dict) and c.get("outputs"))
    if with_outputs:
        return CheckResult(
            "notebook-outputs", Status.REVIEW, f"{with_outputs} cells carry outputs: clear or check them"
        )
    return CheckResult("file-type", Status.PASS, "notebook without outputs")


def size_check(data: bytes, max_bytes: int) -> CheckResult:
    if len(data) > max_bytes:
        return CheckResult("size", Status.FAIL, f"{len(data)} bytes, over the {max_bytes}-byte limit")
    return CheckResult("size", Status.PASS, f"{len(data)} bytes")


def identifier_check(data: bytes) -> CheckResult | None:
    """Valid NHS numbers in text are refused outright (the count, never the values, is reported)."""
    if content_type(data) != "text":
        return None
    found = find_nhs_numbers(data.decode("utf-8"))
    if found:
        return CheckResult(
            "identifiers", Status.FAIL, f"{len(found)} valid NHS numbers found: outputs must not hold them"
        )
    return CheckResult("identifiers", Status.PASS, "no NHS numbers")


def check_file(name: str, data: bytes, *, max_bytes: int) -> list[CheckResult]:
    results = [size_check(data, max_bytes), type_check(name, data)]
    identifiers = identifier_check(data)
    return results + ([identifiers] if identifiers else [])


def worst(results: list[CheckResult]) -> Status:
    statuses = {r.status for r in results}
    return Status.FAIL if Status.FAIL in statuses else Status.REVIEW if Status.REVIEW in statuses else Status.PASS
