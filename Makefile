# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
EXPERIMENT ?= demo
DEMO_EPOCHS ?= 4
TTS_EXPERIMENT ?= tts
TTS_CONFIG ?= configs/acoustic_more_text.json
TTS_THREADS ?= 2
HELDOUT := samplernn_pase/data/sentences_heldout.txt

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
	  $(PY) -m samplernn_pase --experiment-name $(EXPERIMENT) --verbose init --config-path config.default.json \
	    --set test.period=$(DEMO_EPOCHS); \
	fi
	$(PY) -m samplernn_pase --experiment-name $(EXPERIMENT) train --device cpu --max-epochs $(DEMO_EPOCHS)
	@echo "audio, spectrograms, metrics (train renders the test utterances at the last of its $(DEMO_EPOCHS) epochs):"
	@ls -d experiments/$(EXPERIMENT)/results/epoch-* | sort -t- -k2 -n | tail -1
	# Text to speech: the acoustic model ($(TTS_CONFIG): 401 texts, 800 utterances, 30 epochs;
	# its vocoder the experiment above), then two sentences no demo speaker reads, in a female
	# and a male demo voice. TTS_THREADS 2 suits an idle 2-core CPU (an epoch 1.4x faster than
	# on one); on a CPU shared with other jobs two threads stall each other (steps of 0.2 s
	# took 1-8 s): use TTS_THREADS=1 there. TTS_CONFIG=configs/acoustic.json: 50 texts, about
	# 3 minutes less, less intelligible (README, "Text to speech judged").
	@if [ ! -f experiments/$(TTS_EXPERIMENT)/config.json ]; then \
	  $(PY) -m samplernn_pase --experiment-name $(TTS_EXPERIMENT) init --config-path $(TTS_CONFIG); \
	fi
	OMP_NUM_THREADS=$(TTS_THREADS) $(PY) -m samplernn_pase --experiment-name $(TTS_EXPERIMENT) train --device cpu
	$(PY) -m samplernn_pase --experiment-name $(TTS_EXPERIMENT) synthesize --speaker demo_f1 \
	  --text "$$(sed -n 1p $(HELDOUT))" --output-dir experiments/$(TTS_EXPERIMENT)/speech
	$(PY) -m samplernn_pase --experiment-name $(TTS_EXPERIMENT) synthesize --speaker demo_m1 \
	  --text "$$(sed -n 2p $(HELDOUT))" --output-dir experiments/$(TTS_EXPERIMENT)/speech
	@echo "text to speech (held-out sentences, predicted durations and features, the SampleRNN vocoder):"
	@ls experiments/$(TTS_EXPERIMENT)/speech/*.wav | grep -v '\.\(real\|world\|world_predicted\)\.wav'

# Two pytest workers (pytest-xdist), a test file per worker at a time (module fixtures built once):
# most tests wait on CLI subprocesses of one thread, so the 2-core machine runs two files at once.
TEST_WORKERS ?= 2
test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 tests

bench: venv
	$(PY) bench/samplernn.py
	$(PY) bench/melnet.py
	$(PY) bench/features.py

# No venv: a GPU machine's own Python (its CUDA torch), no network; see bench/gpu.py.
gpu-check:
	$(PYTHON) bench/gpu.py

clean-demo:
	rm -rf experiments/$(EXPERIMENT) experiments/$(TTS_EXPERIMENT)
