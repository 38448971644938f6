# Two commands set up a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
COMPILED := $(VENV)/.compiled
# The modules mypyc compiles (utcp/_build.py lists them); an edit to one rebuilds.
CORE_SOURCES := $(shell $(PYTHON) -c "import sys; sys.path.insert(0, 'utcp'); \
	from _build import source_files; print(*source_files())")

.PHONY: venv build test lint typecheck pytest demo bench bench-wan fuzz clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# The compiled core (README, "The compiled core"): mypyc builds it in place beside the sources.
# Without a C compiler the build is skipped and the pure-Python core runs.
$(COMPILED): $(STAMP) setup.py $(CORE_SOURCES) utcp/_crc.c
	$(PY) -W ignore setup.py -q build_ext --inplace -j 2
	@# setuptools leaves a library alone when the C it generates is unchanged (a source that
	@# was only touched): mark the build current, or it would count as stale (utcp/_build.py).
	find utcp -name '*.so' -exec touch {} +
	touch $(COMPILED)

build: $(COMPILED)

lint: $(STAMP)
	$(VENV)/bin/ruff check utcp tests examples benchmarks setup.py
	$(VENV)/bin/ruff format --check utcp tests examples benchmarks setup.py

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict utcp

# Three runs side by side: the whole suite on the fast datagram I/O path with the compiled core;
# every real-socket test on the portable path (asyncio's DatagramProtocol; UTCP_IO picks the
# path, utcp/asyncio/dgram.py); every other test, and the asyncio-contract suites (marked
# conformance), on the core's pure-Python sources (UTCP_PURE=1). The two side runs' output
# is in build/test-logs/, its tail printed at the end.
LOGS := build/test-logs
pytest: $(COMPILED)
	@mkdir -p $(LOGS)
	@UTCP_IO=portable $(PY) -m pytest -q -p no:cacheprovider -m sockets >$(LOGS)/portable.log 2>&1 & \
	portable=$$!; \
	UTCP_PURE=1 $(PY) -m pytest -q -p no:cacheprovider -m "not sockets or conformance" >$(LOGS)/pure.log 2>&1 & \
	pure=$$!; \
	UTCP_IO=fast $(PY) -m pytest -q; fast_rc=$$?; \
	wait $$portable; portable_rc=$$?; wait $$pure; pure_rc=$$?; \
	echo "=== portable I/O path, real-socket tests ($(LOGS)/portable.log)"; \
	tail -n 25 $(LOGS)/portable.log; \
	echo "=== pure-Python core, tests without sockets ($(LOGS)/pure.log)"; \
	tail -n 25 $(LOGS)/pure.log; \
	echo "=== exit codes: fast $$fast_rc, portable $$portable_rc, pure $$pure_rc"; \
	test $$fast_rc -eq 0 -a $$portable_rc -eq 0 -a $$pure_rc -eq 0

test: lint typecheck pytest

demo: $(COMPILED)
	$(PY) examples/demo.py

# Side-by-side benchmark (benchmarks/README.md); extra flags: make bench BENCH_ARGS='--quick'
bench: $(COMPILED)
	UTCP_PURE_BUILD=1 $(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/bench.py $(BENCH_ARGS)
	@# Scaling over cores (worker processes) and what idle connections cost (benchmarks/README.md)
	$(PY) benchmarks/scaling.py $(SCALING_ARGS)
	$(PY) benchmarks/idle_cost.py $(IDLE_ARGS)

# The same transports across one emulated WAN path between two network namespaces
# (benchmarks/README.md, "WAN benchmark"); needs root and /dev/net/tun, else it says so and
# exits 0. Extra flags: make bench-wan BENCH_WAN_ARGS='--quick'
bench-wan: $(COMPILED)
	UTCP_PURE_BUILD=1 $(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/wan/bench_wan.py $(BENCH_WAN_ARGS)

# Coverage-guided fuzzing (docs/FUZZING.md): each target runs FUZZ_SECONDS from the seed corpus in
# tests/fuzz/corpus/; new inputs and crash files go to FUZZ_OUT, never into the corpus.
FUZZ_SECONDS ?= 30
FUZZ_OUT ?= build/fuzz
FUZZ_TARGETS := decode connection

fuzz: $(STAMP)
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_OUT)/$$t/corpus $(FUZZ_OUT)/$$t/crashes || exit 1; \
		echo "fuzz_$$t: $(FUZZ_SECONDS) s, new inputs in $(FUZZ_OUT)/$$t/corpus"; \
		UTCP_PURE=1 $(PY) tests/fuzz/fuzz_$$t.py -max_total_time=$(FUZZ_SECONDS) -timeout=30 \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_OUT)/$$t/crashes/ \
			$(FUZZ_OUT)/$$t/corpus tests/fuzz/corpus/$$t || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build
	find utcp -name '*.so' -delete
