# Two entry points: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install what they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DEMO_STORAGE ?= $(CURDIR)/runs
DEMO_MEMO ?= $(CURDIR)/runs/_feature_memo

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e .
	touch $(STAMP)

# The test tools (pytest, moto, Jupyter, ...) only where tests run: `make demo` installs less.
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $(TEST_STAMP)

install: $(TEST_STAMP)

demo: $(STAMP)
	WSSS_FEATURE_MEMO=$(DEMO_MEMO) $(BIN)/wsss study run search_spaces/studies/demo.yaml --storage $(DEMO_STORAGE) --name demo
	rm -rf $(DEMO_MEMO)
	$(BIN)/wsss report $(DEMO_STORAGE)/demo -o $(DEMO_STORAGE)/demo/report.html

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q tests

# Timing scripts (bench/): each prints its ratios with the target it must reach.
bench: $(STAMP)
	$(BIN)/python -m bench.fsl
	$(BIN)/python -m bench.metrics
	$(BIN)/python -m bench.random_walk
	$(BIN)/python -m bench.channels_last
	$(BIN)/python -m bench.frozen_bf16
	$(BIN)/python -m bench.transforms
	$(BIN)/python -m bench.pipeline
	$(BIN)/python -m bench.study
	$(BIN)/python -m bench.epoch_reports

clean:
	rm -rf $(VENV) runs .pytest_cache
