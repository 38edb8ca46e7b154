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

.PHONY: install demo test bench
install: $(BIN)/sadpipe

demo: install
	$(BIN)/sadpipe demo --workdir $(WORKDIR)

test: install
	$(BIN)/python -m pytest tests

bench: install
	$(BIN)/python -m cuda_ops.bench
	$(BIN)/python -m shards.bench
	$(BIN)/python -m sadpipe.bench.train_step
