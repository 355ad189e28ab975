# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= demo
DEMO_EPOCHS ?= 2

.PHONY: venv demo test bench clean-demo

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=23" "setuptools<81" wheel
	$(PY) -m pip install -r requirements.txt
	touch $@

venv: $(VENV)/.installed

demo: venv
	@if [ ! -f experiments/$(EXPERIMENT)/config.json ]; then \
	  $(PY) -m samplernn_pase --experiment-name $(EXPERIMENT) --verbose init --config-path config.default.json; \
	fi
	$(PY) -m samplernn_pase --experiment-name $(EXPERIMENT) --verbose train --device cpu --max-epochs $(DEMO_EPOCHS)
	$(PY) -m samplernn_pase --experiment-name $(EXPERIMENT) test
	@echo "audio: $$(ls -d experiments/$(EXPERIMENT)/results/epoch-*)"

test: venv
	$(PY) -m pytest -q tests

bench: venv
	$(PY) bench/samplernn.py
	$(PY) bench/melnet.py
	$(PY) bench/features.py

clean-demo:
	rm -rf experiments/$(EXPERIMENT)
