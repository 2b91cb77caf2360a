# One entry point for people and CI. Every target installs what it needs first (deploy/setup.sh).
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo test check format clean

$(VENV)/.installed: pyproject.toml deploy/setup.sh
	./deploy/setup.sh
	touch $@

setup: $(VENV)/.installed

demo: setup
	./deploy/demo.sh

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .tre
