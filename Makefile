# Every target creates the virtualenv first if needed, so `make run` and `make test`
# each work on a fresh machine with only Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast test-unit check format proto lint-proto demo bench sim plugin clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e . --group dev
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m service

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The delivery rules and politeness as pure functions: no database, no HTTP, seconds.
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python scripts/check_proto.py

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerates the checked-in Python code and typed stubs from proto/.
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

# buf's STANDARD lint rules for the API (needs Node.js; buf comes from the npm registry).
lint-proto:
	npx --yes @bufbuild/buf lint

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

sim: $(STAMP)
	$(BIN)/python -m simulators.powerschool

# The PowerSchool plugin zip a district admin installs (plugin.xml at its root), into dist/.
plugin: $(STAMP)
	$(BIN)/python scripts/build_plugin.py --out dist

clean:
	rm -rf $(VENV) .data dist .pytest_cache .mypy_cache .ruff_cache
