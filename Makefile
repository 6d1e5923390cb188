# xrayd — two commands matter: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test ohif axe viewer lint typecheck bench-receive bench-infer bench-e2e bench-attacks train-fracatlas evaluate-fracatlas fuzz clean

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

# The OHIF viewer for tests/e2e/test_ohif.py: the pinned npm @ohif/app tarball (npm pack only, its
# sha512 checked against tests/ohif.py's pin), dist/ unpacked into .cache/ohif/<version>/; nothing
# to do when it is there. Standard-library Python: no virtual environment needed.
ohif:
	$(PYTHON) tests/ohif.py fetch

# axe-core for tests/e2e/test_accessibility.py: the pinned npm axe-core tarball (npm pack only,
# its sha512 checked against tests/axe.py's pin), axe.min.js unpacked into .cache/axe/<version>/.
axe:
	$(PYTHON) tests/axe.py fetch

# The study page's viewport (web-viewer/: cornerstone3D, pinned in package-lock.json), built into
# xrayd/web/static/viewer/. The bundle is committed (make demo needs no npm): rebuild it after
# changing web-viewer/ and commit the result; tests/unit/test_viewer_bundle.py checks they match.
viewer:
	cd web-viewer && npm ci --ignore-scripts --no-audit --no-fund && npm run build

# With npm, the OHIF viewer first; without it (or offline) its test skips, and fails in CI.
NPM := $(shell command -v npm 2>/dev/null)
test: $(STAMP)
ifneq ($(NPM),)
	$(MAKE) --no-print-directory ohif || echo "make test: no OHIF viewer: tests/e2e/test_ohif.py skips (fails in CI)"
	$(MAKE) --no-print-directory axe || echo "make test: no axe-core: tests/e2e/test_accessibility.py skips (fails in CI)"
endif
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -ra --durations=25

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

bench-receive: $(STAMP)
	$(BIN)/python bench/receive.py

bench-infer: $(STAMP)
	$(BIN)/python bench/infer.py

# the issue-15 attacks against `xrayd serve`; BEFORE=DIR also runs them against another checkout
bench-attacks: $(STAMP)
	$(BIN)/python bench/attacks.py
	$(if $(BEFORE),$(BIN)/python bench/attacks.py --repo $(BEFORE))

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

# C-STORE ack latency p50/p99 of `xrayd serve` on SQLite with and without 20 web clients reading
# (bench/cstore_under_web_load.py); BEFORE=DIR also measures another checkout
.PHONY: bench-web-load
bench-web-load: $(STAMP)
	$(BIN)/python bench/cstore_under_web_load.py
	$(if $(BEFORE),$(BIN)/python bench/cstore_under_web_load.py --checkout $(BEFORE))

bench-e2e: $(STAMP)
	$(BIN)/python bench/e2e.py

# Sustained throughput of `xrayd listener` + W `xrayd worker --queues analysis,delivery`
# processes (fresh PostgreSQL database, SQLite if unreachable) at a steady arrival rate:
# studies/hour and turnaround p50/p95 per W (bench/throughput.py). Takes about
# BENCH_MINUTES + 2 minutes per worker count.
BENCH_RATE ?= 600
BENCH_MINUTES ?= 5
BENCH_WORKERS ?= 1,2
.PHONY: bench-throughput
bench-throughput: $(STAMP)
	$(BIN)/python bench/e2e.py --throughput --rate $(BENCH_RATE) --minutes $(BENCH_MINUTES) \
	    --workers $(BENCH_WORKERS)

# Fuzzing (docs/fuzzing.md): the header check and the pixel path with atheris (coverage-guided),
# then the network fuzzer against an in-process listener, each for FUZZ_SECONDS. New inputs go
# to $(FUZZ_WORK); crashes to tests/fuzz/crashes/<target>/, replayed by the test suite. All three
# run whatever the others found; the exit status is 1 when any of them found something.
FUZZ_SECONDS ?= 300
FUZZ_SEED ?= 1
FUZZ_WORK ?= runs/fuzz
FUZZ_FLAGS = -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1500 -timeout=30 -print_final_stats=1
fuzz: $(STAMP)
	$(BIN)/python -c "import atheris" 2>/dev/null || $(BIN)/pip install --quiet -e ".[fuzz]"
	mkdir -p $(FUZZ_WORK)/header $(FUZZ_WORK)/pixels tests/fuzz/crashes/header tests/fuzz/crashes/pixels
	cd tests/fuzz && status=0; export FUZZ_MEMORY_MB=3072; \
	../../$(BIN)/python fuzz_header.py ../../$(FUZZ_WORK)/header corpus/header $(FUZZ_FLAGS) \
	    -artifact_prefix=crashes/header/ || status=1; \
	../../$(BIN)/python fuzz_pixels.py ../../$(FUZZ_WORK)/pixels corpus/pixels $(FUZZ_FLAGS) \
	    -artifact_prefix=crashes/pixels/ || status=1; \
	../../$(BIN)/python fuzz_network.py --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED) || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) demo-data .mypy_cache .ruff_cache .pytest_cache
