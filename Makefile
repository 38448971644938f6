# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test lint typecheck pytest demo bench fuzz clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check utcp tests examples benchmarks
	$(VENV)/bin/ruff format --check utcp tests examples benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict utcp

# The whole suite on the fast datagram I/O path, then every real-socket test again on the
# portable one (asyncio's DatagramProtocol); UTCP_IO picks the path (utcp/asyncio/dgram.py).
pytest: $(STAMP)
	UTCP_IO=fast $(PY) -m pytest -q
	UTCP_IO=portable $(PY) -m pytest -q -m sockets

test: lint typecheck pytest

demo: $(STAMP)
	$(PY) examples/demo.py

# Side-by-side benchmark (benchmarks/README.md); extra flags: make bench BENCH_ARGS='--quick'
bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

# Coverage-guided fuzzing (docs/FUZZING.md): each target runs FUZZ_SECONDS from the seed corpus in
# tests/fuzz/corpus/; new inputs and crash files go to FUZZ_OUT, never into the corpus.
FUZZ_SECONDS ?= 30
FUZZ_OUT ?= build/fuzz
FUZZ_TARGETS := decode connection

fuzz: $(STAMP)
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_OUT)/$$t/corpus $(FUZZ_OUT)/$$t/crashes || exit 1; \
		echo "fuzz_$$t: $(FUZZ_SECONDS) s, new inputs in $(FUZZ_OUT)/$$t/corpus"; \
		$(PY) tests/fuzz/fuzz_$$t.py -max_total_time=$(FUZZ_SECONDS) -timeout=30 \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_OUT)/$$t/crashes/ \
			$(FUZZ_OUT)/$$t/corpus tests/fuzz/corpus/$$t || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
