"""The disclosure rules a TRE applies to outputs, and loading them from a policy file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from tre.errors import InputError


@dataclasses.dataclass(frozen=True)
class RuleSet:
    """Parameters of the statistical disclosure control rules (defaults match ACRO's)."""

    threshold: int = 10
    dominance_n: int = 2
    dominance_k: float = 0.9
    p_ratio: float = 0.1
    min_dof: int = 10
    zeros_disclosive: bool = True
    check_missing: bool = True
    name: str = "default"

    def __post_init__(self) -> None:
        _check_int("threshold", self.threshold, minimum=1)
        _check_int("dominance_n", self.dominance_n, minimum=1)
        _check_int("min_dof", self.min_dof, minimum=0)
        _check_fraction("dominance_k", self.dominance_k, low_open=True)
        _check_fraction("p_ratio", self.p_ratio, low_open=False)
        for flag in ("zeros_disclosive", "check_missing"):
            if not isinstance(getattr(self, flag), bool):
                raise InputError(f"Disclosure rule {flag} must be true or false.")
        if not isinstance(self.name, str) or not self.name:
            raise InputError("Disclosure rule set name must be a non-empty string.")

    def as_dict(self) -> dict[str, Any]:
        """The rules as a plain dict (for the sidecar file)."""
        return dataclasses.asdict(self)


def _check_int(field: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"Disclosure rule {field} must be an integer of at least {minimum}, not {value!r}.")


def _check_fraction(field: str, value: object, *, low_open: bool) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (0 < value <= 1 if low_open else 0 <= value <= 1)
    )
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise InputError(f"Disclosure rule {field} must be a number in {interval}, not {value!r}.")


DEFAULT_RULES = RuleSet()
FIELDS = tuple(field.name for field in dataclasses.fields(RuleSet))


def load_rules(path: str | Path) -> RuleSet:
    """Read a RuleSet from a YAML policy file; unknown keys are refused. The name defaults to the file's stem."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise InputError(f"Cannot read disclosure rules from {path}: {error}.") from error
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise InputError(f"Disclosure rules in {path} must be a mapping of rule names to values.")
    unknown = sorted(str(key) for key in document if key not in FIELDS)
    if unknown:
        raise InputError(f"Unknown disclosure rule(s) in {path}: {', '.join(unknown)}; known: {', '.join(FIELDS)}.")
    return RuleSet(**{"name": path.stem, **document})
