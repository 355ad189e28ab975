# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= demo
DEMO_EPOCHS ?= 4

.PHONY: venv demo test bench gpu-check clean-demo

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=23" "setuptools<81" wheel
	$(PY) -m pip install -r requirements.txt
	# The package itself, editable: `$(VENV)/bin/samplernn-pase` and `python -m samplernn_pase`
	# from any folder, running this checkout's code.
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

demo: venv
	@if [ ! -f experiments/$(EXPERIMENT)/config.json ]; then \
	  $(PY) -m samplernn_pase --experiment-name $(EXPERIMENT) --verbose init --config-path config.default.json; \
	fi
	$(PY) -m samplernn_pase --experiment-name $(EXPERIMENT) train --device cpu --max-epochs $(DEMO_EPOCHS)
	@echo "audio, spectrograms, metrics (train renders the test utterances every test.period epochs):"
	@ls -d experiments/$(EXPERIMENT)/results/epoch-* | sort -t- -k2 -n | tail -1

test: venv
	$(PY) -m pytest -q --durations=25 tests

bench: venv
	$(PY) bench/samplernn.py
	$(PY) bench/melnet.py
	$(PY) bench/features.py

# No venv: a GPU machine's own Python (its CUDA torch), no network; see bench/gpu.py.
gpu-check:
	$(PYTHON) bench/gpu.py

clean-demo:
	rm -rf experiments/$(EXPERIMENT)
