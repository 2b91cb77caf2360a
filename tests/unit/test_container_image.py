"""deploy/Containerfile, checked without a container engine: it copies files that exist and the build context keeps,
its final stage carries no build tools, and it runs as the non-root user the Helm chart expects."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONTAINERFILE = REPO / "deploy" / "Containerfile"
IGNORE = REPO / ".dockerignore"
BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|cmake|cargo|rustc|apt-get install)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def stages() -> list[Stage]:
    text = CONTAINERFILE.read_text(encoding="utf-8")
    logical = re.sub(r"\\\n\s*", " ", text)  # join continuation lines
    args: dict[str, str] = {}
    found: list[Stage] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not found:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], parts[0])
            found.append(Stage(base, parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None))
        else:
            found[-1].instructions.append((keyword, rest))
    return found


def _ignored(path: str) -> bool:
    """Docker's .dockerignore semantics for the patterns we use: later patterns win, '!' re-includes."""
    ignored = False
    for pattern in IGNORE.read_text(encoding="utf-8").splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [path, *(str(Path(*Path(path).parts[:i])) for i in range(1, len(Path(path).parts)))]
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.removeprefix("**/")) for c in candidates):
            ignored = not negate
    return ignored


def test_two_stages_on_the_same_python_311_slim_base() -> None:
    build, runtime = stages()
    assert build.base == runtime.base
    assert re.fullmatch(r"(docker\.io/library/)?python:3\.11-slim(-\w+)?", runtime.base)
    requires = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert requires == ">=3.11"


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    copied = []
    for stage in stages():
        for keyword, rest in stage.instructions:
            if keyword == "COPY" and not rest.startswith("--from"):
                *sources, _destination = rest.split()
                copied += sources
    assert copied
    for source in copied:
        assert (REPO / source).exists(), f"COPY {source}: no such file"
        assert not _ignored(source), f"COPY {source}: excluded by .dockerignore"


def test_the_build_context_leaves_out_secrets_and_local_state() -> None:
    for path in (".venv", ".git", ".tre", "tests", "examples/data", "tre/__pycache__"):
        assert _ignored(path), path
    assert not _ignored("tre/cli/__init__.py")


def test_the_runtime_stage_copies_only_the_built_environment_and_has_no_build_tools() -> None:
    runtime = stages()[-1]
    text = " ".join(rest for _, rest in runtime.instructions)
    assert not BUILD_TOOLS.search(text)
    copies = [rest for keyword, rest in runtime.instructions if keyword == "COPY"]
    assert copies == ["--from=build /opt/tre /opt/tre"]


def test_it_runs_as_the_non_root_user_the_chart_expects() -> None:
    runtime = stages()[-1]
    (user,) = [rest for keyword, rest in runtime.instructions if keyword == "USER"]
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0
    chart = yaml.safe_load((REPO / "helm" / "tre" / "values.yaml").read_text(encoding="utf-8"))
    assert (uid, gid) == (chart["securityContext"]["runAsUser"], chart["securityContext"]["runAsGroup"])
    assert f"--uid {uid}" in " ".join(rest for _, rest in runtime.instructions)


@pytest.mark.parametrize(
    ("variable", "value"), [("TRE_HOME", "/tmp/tre"), ("HOME", "/tmp"), ("PYTHONDONTWRITEBYTECODE", "1")]
)
def test_it_writes_only_under_tmp(variable: str, value: str) -> None:
    """The chart mounts an emptyDir on /tmp and makes the root filesystem read-only."""
    runtime = stages()[-1]
    env = " ".join(rest for keyword, rest in runtime.instructions if keyword == "ENV")
    assert f"{variable}={value}" in env.split()
    workdir = [rest for keyword, rest in runtime.instructions if keyword == "WORKDIR"]
    assert workdir == ["/tmp"]


def test_the_image_has_every_command_the_chart_runs() -> None:
    """uvicorn and tre come from the project's dependencies and its console script."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["scripts"]["tre"] == "tre.cli:main"
    assert any(d.startswith("uvicorn") for d in project["dependencies"])
    assert any(d.startswith("psycopg") for d in project["optional-dependencies"]["postgres"])
    build = stages()[0]
    assert any('".[postgres]"' in rest for keyword, rest in build.instructions if keyword == "RUN")
