# One place for the project's tooling (STYLE.md §12).
# `make test` works on a fresh machine: it creates .venv, installs the
# project with its test and lint extras, and runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint format bench chaos demo clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	@if ls bench/bench_*.py >/dev/null 2>&1; then \
		for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done; \
	else echo "no benchmarks yet"; fi

# Not part of `make test`: bounded (about 5 + 2 minutes), seeded; replay with
# `$(BIN)/python bench/chaos.py --seed N` and `$(BIN)/python bench/chaos_ha.py --seed N`
# (Sentinel failovers under load). docs/reliability.md has the figures.
chaos: $(STAMP)
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)
	$(BIN)/python bench/chaos_ha.py $(CHAOS_HA_ARGS)

demo: $(STAMP)
	$(BIN)/python -m multipair.demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
