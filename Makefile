# fusionrec: `make demo` sets up and runs the main job; `make test` runs the test suite.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO := demo
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[test,embeddings,deep,spark]"
	touch $(STAMP)

setup: $(STAMP)

## the main job on the built-in synthetic shop: generate, ingest, train the fused pipeline, evaluate it
## against every generator and the other fusion methods, then serve the API on http://127.0.0.1:8000
demo: $(STAMP)
	$(BIN)/fusionrec generate --out $(DEMO)/shop --users 5000 --items 2000 --events 300000 --seed 7
	rm -rf $(DEMO)/shop.duckdb $(DEMO)/models
	$(BIN)/fusionrec ingest --store $(DEMO)/shop.duckdb --format fusionrec $(DEMO)/shop
	$(BIN)/fusionrec stats --store $(DEMO)/shop.duckdb
	$(BIN)/fusionrec train --store $(DEMO)/shop.duckdb --pipeline configs/demo.toml --out $(DEMO)/models
	$(BIN)/fusionrec evaluate --data $(DEMO)/shop --format fusionrec --protocol temporal --test-days 7 \
		--models pop,repeat,itemknn,rp3beta,als,rrf,blend,fusion --config configs/demo.toml --k 10,20 \
		--output $(DEMO)/eval.json --report $(DEMO)/report
	$(BIN)/fusionrec serve --model $(DEMO)/models --store $(DEMO)/shop.duckdb --host 127.0.0.1 --port 8000

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not realdata and not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

bench-quick: $(STAMP)
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(DEMO) .pytest_cache
