# One entry point for people and CI. Every target installs what it needs first (deploy/setup.sh).
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: setup demo tour test check format clean

$(VENV)/.installed: pyproject.toml deploy/setup.sh
	./deploy/setup.sh
	touch $@

setup: $(VENV)/.installed

demo: setup
	TRE_HOME=$${TRE_HOME:-$(CURDIR)/.tre/home} $(BIN)/tre up --demo

tour: setup
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
