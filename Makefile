# p2psync: `make demo` shows the main job, `make test` runs every test. Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: test test-quick demo lint bench clean vectors constraints chaos

# constraints.txt: the tested versions, so a clean clone installs what the tests ran with (docs/dependencies.md).
$(STAMP): pyproject.toml setup.py p2psync/_speedups.c constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "p2psync needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

test: $(STAMP)
	@bash scripts/test-deps.sh
	$(BIN)/python -m pytest -q

# The quick subset (about a minute): the pure engine, the store, formats, vectors, crypto and the
# layer and start-up rules; no network servers, daemons, relays, namespaces or tmpfs.
QUICK := tests/test_canonical.py tests/test_sync_engine.py tests/test_delivery.py tests/test_vectors.py \
	tests/test_store.py tests/test_formats.py tests/test_fields_normal.py tests/test_speedups.py \
	tests/test_relay_crypto.py tests/test_relay_key_vectors.py tests/test_pairing_crypto.py \
	tests/test_layers.py tests/test_start.py tests/test_replay_property.py tests/test_log_kept_in_refs.py
test-quick: $(STAMP)
	$(BIN)/python -m pytest -q $(QUICK)

# Long, random chaos runs (docs/testing.md): SEEDS simulated seeds, then MINUTES of real processes.
SEEDS   ?= 1000
MINUTES ?= 5
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos.run --seeds $(SEEDS) --random
	$(BIN)/python -m tests.chaos.real --minutes $(MINUTES)

# WEB=1 keeps the demo's web app open at the end (until Ctrl-C).
demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" WEB=$(WEB) bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check p2psync tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/bench_library.py
	$(BIN)/python bench/bench_import.py
	$(BIN)/python bench/bench_export.py
	$(BIN)/python bench/bench_sync.py
	$(BIN)/python bench/bench_lan.py
	$(BIN)/python bench/bench_attachments.py
	$(BIN)/python bench/bench_relay.py
	$(BIN)/python bench/bench_start.py
	$(BIN)/python bench/bench_web.py
	$(BIN)/python bench/bench_scale.py  # 10,000 and 100,000; add --sizes 10000,100000,1000000 (see docs)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Regenerate the protocol test vectors (protocol/vectors/) from protocol/make_vectors.py.
vectors: $(STAMP)
	$(BIN)/python protocol/make_vectors.py

# Refresh constraints.txt: the newest versions pyproject.toml's ranges allow, resolved in a fresh
# temporary venv (never this one), written whole, then the tests run on them (make test reinstalls).
constraints:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet '.[test]'; \
	{ sed -n '/^#/p' constraints.txt; "$$tmp/venv/bin/python" -m pip freeze --exclude p2psync; } > constraints.txt.new; \
	mv constraints.txt.new constraints.txt; \
	echo "constraints.txt refreshed; running the tests on it."
	$(MAKE) test
