# xrayd — two commands matter: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench-receive bench-infer bench-e2e clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first and pinned: `torch==2.13.0` takes the local CPU build; a bare range would
# otherwise pull a multi-GB CUDA build from PyPI.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/xrayd demo --data-dir demo-data

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench-receive: $(STAMP)
	$(BIN)/python bench/receive.py

bench-infer: $(STAMP)
	$(BIN)/python bench/infer.py --bundle models/bundles/xrayd-phantom

bench-e2e: $(STAMP)
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) demo-data .mypy_cache .ruff_cache .pytest_cache
