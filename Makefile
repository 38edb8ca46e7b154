# Two entry points for a fresh machine: `make demo` (the main job on the embedded data)
# and `make test` (the test suite). Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
WORKDIR ?= work/demo

$(BIN)/sadpipe: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN) || $(BIN)/pip install -q "torch>=2.4" "torchvision>=0.19"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

.PHONY: install demo test test-numerics bench
install: $(BIN)/sadpipe

demo: install
	$(BIN)/sadpipe demo --workdir $(WORKDIR)

# The linter (ruff: pyflakes, pycodestyle, import order; pyproject.toml), the suite, then the
# numerics-sensitive tests (pytest -m numerics: two computations that should agree up to
# float32 rounding) again with torch's and oneDNN's AVX2 kernels, so a
# tolerance that holds only on one CPU's vector width fails here, not on a user's machine.
# The tests run in TEST_WORKERS pytest processes (pytest-xdist) of one torch thread each: most
# of the suite's time is single-threaded (stage processes importing torch, small tensors), so
# two workers on a 2-core machine take about half the time of one with two threads, and one
# thread per worker never oversubscribes the cores.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS)
test: install
	$(BIN)/ruff check .
	$(PYTEST) tests
	$(MAKE) --no-print-directory test-numerics CPU_KERNELS=avx2

# CPU_KERNELS = avx2 | default (unvectorised) | native
CPU_KERNELS ?= avx2
ONEDNN_ISA_avx2 := AVX2
ONEDNN_ISA_default := SSE41
test-numerics: install
	$(if $(filter native,$(CPU_KERNELS)),,ATEN_CPU_CAPABILITY=$(CPU_KERNELS) ONEDNN_MAX_CPU_ISA=$(ONEDNN_ISA_$(CPU_KERNELS))) \
	$(PYTEST) tests -m numerics

bench: install
	$(BIN)/python -m cuda_ops.bench
	$(BIN)/python -m shards.bench
	$(BIN)/python -m sadpipe.bench.train_step
