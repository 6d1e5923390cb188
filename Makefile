# xrayd — two commands matter: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench-receive bench-infer bench-e2e train-fracatlas evaluate-fracatlas clean

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
	$(BIN)/python bench/infer.py

# The default model: fine-tune EfficientNet-Lite0 (ImageNet) on FracAtlas (docs/model-card.md).
# Hours on 2 CPU cores; interrupt and run again with RESUME=--resume to continue.
FRACATLAS ?= ../shared/datasets/fracatlas
MODEL_OUT ?= runs/xrayd-fracatlas-effnetlite0
train-fracatlas: $(STAMP)
	$(BIN)/xrayd train --dataset fracatlas --data $(FRACATLAS) --arch efficientnet_lite0 \
	    --input-size 448 --epochs 14 --warmup-epochs 1 --patience 4 --batch-size 16 --lr 4e-4 \
	    --target-sensitivity 0.9 --bf16 --name xrayd-fracatlas-effnetlite0 --version 1.0.0 \
	    --out $(MODEL_OUT) --cache runs/cache $(RESUME)

evaluate-fracatlas: $(STAMP)
	$(BIN)/xrayd evaluate --dataset fracatlas --data $(FRACATLAS) \
	    --bundle models/bundles/xrayd-fracatlas-effnetlite0 --out runs/report-fracatlas

bench-e2e: $(STAMP)
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) demo-data .mypy_cache .ruff_cache .pytest_cache
