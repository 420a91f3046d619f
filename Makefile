# Development tasks; each is a script CI also runs or a documented one-off. `make demo-models` retrains the two bundled demo models from the local
# MNIST copy (../shared/data/mnist: images 0..7999 train, 8000..9999 held out) and exports
# them, checked against Keras, to mlbridge/demo_models/ (served as `mnist` and `mnist-cnn`).

PYTHON ?= .venv/bin/python
MNIST ?= ../shared/data/mnist
DEMO_BUILD ?= build/demo-models
DEMO_DIR = mlbridge/demo_models

.PHONY: demo-models demo-functions test test-fast lint bench golden

test:        ## the whole suite, as CI runs it
	scripts/test

test-fast:   ## no TensorFlow, Octave, R or Mathics3 runs
	scripts/test -m "not training and not clients and not functions and not slow and not ray"

lint:
	scripts/lint

bench:       ## mlbridge against its peers in one run, ~11 min (bench/README.md); BENCH_ARGS=--quick: ~3 min
	$(PYTHON) -m pip install --quiet -e '.[bench]'
	$(PYTHON) -m bench $(BENCH_ARGS)

golden:      ## re-record tests/testdata replies after retraining (needs a running server)
	$(PYTHON) tests/testdata/make_golden.py

demo-models:
	$(PYTHON) -m mlbridge train mnist-mlp --data $(MNIST) --out $(DEMO_BUILD) --seed 0
	$(PYTHON) -m mlbridge train mnist-cnn --data $(MNIST) --out $(DEMO_BUILD) --seed 0
	$(PYTHON) -m mlbridge export $(DEMO_BUILD)/mnist-mlp.keras --to onnx --data $(MNIST) --out $(DEMO_DIR) --name mnist
	$(PYTHON) -m mlbridge export $(DEMO_BUILD)/mnist-cnn.keras --to onnx --data $(MNIST) --out $(DEMO_DIR) --name mnist-cnn

demo-functions:  ## re-export the bundled JAX functions and their gradients (the functions extra)
	$(PYTHON) -m mlbridge export-fn mlbridge/demo_functions/box_volume.py:box_volume --input 3:float64 --out $(DEMO_DIR)
	$(PYTHON) -m mlbridge export-fn mlbridge/demo_functions/lennard_jones.py:lennard_jones --input 13,3:float64 --out $(DEMO_DIR) --name lj13
