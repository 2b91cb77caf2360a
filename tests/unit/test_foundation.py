"""Settings, the error mapping, metrics, and the public surface of each package."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import tre.governance
import tre.services
import tre.spec
import tre.store
from tests.conftest import Tre
from tests.support.cli import assert_refused
from tre import errors
from tre.config import Settings
from tre.metrics import ProjectPhaseCollector, exposition


def test_settings_default_to_a_sqlite_file_in_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRE_HOME", str(tmp_path))
    settings = Settings()
    assert settings.store_url == f"sqlite+pysqlite:///{tmp_path}/tre.db"


def test_production_requires_an_explicit_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRE_ENVIRONMENT", "production")
    with pytest.raises(ValueError, match="TRE_DATABASE_URL must be set"):
        Settings()
    monkeypatch.setenv("TRE_DATABASE_URL", "postgresql+psycopg://tre@db/tre")
    assert Settings().store_url == "postgresql+psycopg://tre@db/tre"


def test_cli_reports_bad_configuration_in_one_line(tre: Tre, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRE_ENVIRONMENT", "staging")
    assert_refused(tre("project", "list"), "configuration", "environment")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InputError("x"), 422),
        (errors.SpecError("x"), 422),
        (errors.NotFoundError("x"), 404),
        (errors.ConflictError("x"), 409),
        (errors.PermissionDeniedError("x"), 403),
        (errors.AuthenticationError("x"), 401),
        (errors.IntegrityError("x"), 500),
        (errors.TemporaryError("x"), 503),
    ],
)
def test_every_error_maps_to_one_status_and_exit_code(error: errors.TreError, status: int) -> None:
    assert errors.http_status(error) == status
    assert errors.exit_code(error) == errors.EXIT_REFUSED
    assert str(error) == "x"


def test_project_phase_metric_counts_every_phase() -> None:
    registry = CollectorRegistry()
    counts = {"approved": 2, "pending": 1}
    registry.register(ProjectPhaseCollector(lambda: counts))
    text = exposition(registry)
    assert 'tre_projects{phase="approved"} 2.0' in text
    assert 'tre_projects{phase="pending"} 1.0' in text
    assert 'tre_projects{phase="expired"} 0.0' in text
    counts["approved"] = 3
    assert 'tre_projects{phase="approved"} 3.0' in exposition(registry)


@pytest.mark.parametrize("module", [tre.spec, tre.governance, tre.services, tre.store])
def test_public_surface_is_exactly_all(module: object) -> None:
    public = {name for name in vars(module) if not name.startswith("_")}
    exported = set(module.__all__)  # type: ignore[attr-defined]
    assert exported <= public
    submodules = {name for name in public - exported if type(vars(module)[name]).__name__ == "module"}
    assert public - exported - submodules == set()


def test_every_blocker_code_is_documented() -> None:
    from tests.conftest import REPO
    from tre.governance import BlockerCode

    text = (REPO / "docs" / "explanation" / "governance.md").read_text()
    missing = [code.value for code in BlockerCode if f"`{code.value}`" not in text]
    assert missing == []


def test_test_range_numbers_are_valid_distinct_and_bounded() -> None:
    import numpy as np

    from tre.data._nhs import TEST_RANGE_CAPACITY, test_range_numbers, valid_mask

    numbers = test_range_numbers(50_000, np.random.default_rng(1))
    assert len(set(numbers.tolist())) == 50_000
    assert valid_mask(numbers).all()
    assert ((numbers // 10**7) == 999).all()
    with pytest.raises(ValueError, match="NHS test range holds about"):
        test_range_numbers(TEST_RANGE_CAPACITY + 1, np.random.default_rng(1))


def test_the_cli_starts_without_the_heavy_libraries() -> None:
    """Every command pays for what `import tre.cli` loads: the data, Vault and SDC libraries load only when used."""
    import subprocess
    import sys

    probe = "import sys, tre.cli; print(sorted(m for m in ('duckdb', 'pyarrow', 'pandas', 'hvac') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
