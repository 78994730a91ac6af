# Everything a new user runs; each target sets up what it needs (a virtualenv in .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SHARED_TINY := ../shared/data/tiny-imagenet-200
TINY := data/tiny-imagenet-200

.PHONY: install dashboard mlflow-ui quickstart quickstart-offline evidence-cpu evidence-cpu-32 evidence-gpu evidence-gpu-reduced trial test test-quick test-cluster benchmark gpu-check tiny-imagenet imagenet-smoke clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,dashboard]"
	touch $(STAMP)

install: $(STAMP)

STAMP_NAME = $$(date +%Y%m%d-%H%M%S)

## The main job: the quickstart study (8 CIFAR-10 trials, downloaded on first use) on a local Ray,
## tracked in ./mlflow.db, searched state in ./optuna.db, figures in runs/<name>/figures
quickstart: $(STAMP)
	$(PY) -m study launch quickstart --name quickstart-$(STAMP_NAME)

## The same without internet: 10 Tiny ImageNet classes at 32 px from ../shared/data (2,500 training
## images, a twentieth of CIFAR-10's, so more epochs of smaller batches)
quickstart-offline: $(STAMP) $(TINY)/wnids.txt
	$(PY) -m study launch quickstart --name quickstart-offline-$(STAMP_NAME) --set dataset=tinyimagenet \
	    --set data_root=$(TINY) --set num_classes=10 --set image_size=32 --set epochs=15 --set batch_size=64

## The evidence (docs/results.md): 5 arms x 3 seeds on 20 real Tiny ImageNet classes, at 64 px under
## the Tiny-ImageNet-C protocol (evidence-cpu) and at 32 px under the CIFAR-C protocol (evidence-cpu-32),
## each about an hour on 2 CPU cores; evidence-gpu is the authors' Tiny ImageNet setup on a GPU
## machine (about 25 GPU-hours), evidence-gpu-reduced a smaller version of it
evidence-cpu evidence-cpu-32 evidence-gpu evidence-gpu-reduced: $(STAMP) $(TINY)/wnids.txt
	$(PY) -m study launch $@ --name $@-$(STAMP_NAME)

## Watch studies: MLflow's UI on ./mlflow.db, and optuna-dashboard on a search's Optuna storage
## (STORAGE=postgresql://... for another), both on 127.0.0.1 only
STORAGE ?= sqlite:///optuna.db
TRACKING ?= sqlite:///mlflow.db
mlflow-ui: $(STAMP)
	$(VENV)/bin/mlflow ui --backend-store-uri $(TRACKING) --host 127.0.0.1 --port 5000
dashboard: $(STAMP)
	$(VENV)/bin/optuna-dashboard $(STORAGE) --host 127.0.0.1 --port 8080

## One trial without Ray
trial: $(STAMP)
	$(PY) -m trainables run --config configs/quickstart.yaml

$(TINY)/wnids.txt:
	@test -d $(SHARED_TINY) || { echo "no $(SHARED_TINY): get https://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into data/"; exit 1; }
	mkdir -p $(dir $(TINY))
	for f in $(SHARED_TINY)/*.tar.gz; do tar -xzf $$f -C $(dir $(TINY)); done  # each holds tiny-imagenet-200/...

tiny-imagenet: $(TINY)/wnids.txt

## A small folder in ImageNet's layout (train/<wnid>/, val/<wnid>/) from Tiny ImageNet, to run the streamed
## (DALI) path without ImageNet: 10 classes, 50 train and 20 val images each, upscaled to 128 px; kept when
## already complete (trainables/data/imagenet_smoke.py)
IMAGENET_SMOKE := data/imagenet-smoke
imagenet-smoke: $(STAMP) $(TINY)/wnids.txt
	$(PY) -m trainables.data.imagenet_smoke --from $(TINY) --out $(IMAGENET_SMOKE)

## The tests (the whole suite, CPU); CI runs exactly this
test: $(STAMP)
	$(PY) -m pytest

## The quick tier (under 2 minutes on 2 CPU cores): everything but the slow tests (real studies, the cluster)
test-quick: $(STAMP)
	$(PY) -m pytest -m "not slow"

## The cluster tier: docker-compose.yml's services as processes on loopback (needs root)
test-cluster: $(STAMP)
	$(PY) -m pytest -m cluster

benchmark: $(STAMP)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/study_overhead.py

## Issue 21: the GPU check, on a machine with torch and torchvision but no Ray, MLflow or Optuna (so no
## virtualenv from this Makefile): the report goes to $(GPU_CHECK_OUT); see benchmarks/README.md
GPU_CHECK_OUT ?= gpu-check
gpu-check:
	$(PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) .pytest_cache
