# Staccato: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STACCATO := $(BIN)/staccato
DEMO_DIR ?= /tmp/staccato-demo
#: pytest-xdist processes for `make test` (a quiet full run at 2 kept only ~1.1 of the 2 cores busy,
#: at 3 ~1.45 (ci43, 2026-12-05: 72 % busy, 949 s): most tests wait on heartbeat timeouts,
#: outages and paced sources)
TEST_PROCESSES ?= 4

.PHONY: venv demo down test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

venv: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

## demo: start the embedded service (Temporal dev server + UI + worker) and move a real file
demo: venv
	$(STACCATO) up --detach
	mkdir -p $(DEMO_DIR)
	head -c 268435456 /dev/urandom > $(DEMO_DIR)/source.bin
	$(STACCATO) cp $(DEMO_DIR)/source.bin $(DEMO_DIR)/copy.bin
	cmp $(DEMO_DIR)/source.bin $(DEMO_DIR)/copy.bin && echo "demo: copy.bin is byte-identical to source.bin"
	$(STACCATO) status $(DEMO_DIR)/copy.bin
	@echo "The service keeps running: Temporal UI at http://127.0.0.1:8233 ; stop it with: make down"

down:
	$(STACCATO) down

## test: lint, type-check and run the test suite against real servers it starts itself
test: venv
	./scripts/install-system-deps
	$(BIN)/ruff check staccato tests bench
	$(BIN)/mypy staccato
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES) --dist worksteal --durations=40

lint: venv
	$(BIN)/ruff check staccato tests bench
	$(BIN)/ruff format --check staccato tests bench
	$(BIN)/mypy staccato

## bench: benchmarks against peer tools (by hand; not part of the tests)
bench: venv
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.bench_file_http
	$(BIN)/python -m bench.bench_s3
	$(BIN)/python -m bench.bench_sftp
	$(BIN)/python -m bench.bench_dataset

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
