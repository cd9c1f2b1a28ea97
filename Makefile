# Two commands: `make run` and `make test`. Both create .venv (Python 3.11) and install on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := var/demo

.PHONY: install test run clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

run: install
	test -f $(DEMO)/classes.txt || $(BIN)/wsis synth $(DEMO) --train 60 --val 20 --size 160 --seed 0
	$(BIN)/wsis convert --data $(DEMO) --split val --out var/demo_val_gt.json
	$(BIN)/wsis convert --data $(DEMO) --split val --out var/demo_val_gt_as_results.json --as-results
	$(BIN)/wsis eval --gt var/demo_val_gt.json --pred var/demo_val_gt_as_results.json --out var/demo_val_metrics.json

clean:
	rm -rf $(VENV) var
