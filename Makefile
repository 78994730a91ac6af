# Everything a new user runs; each target sets up what it needs (a virtualenv in .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SHARED_TINY := ../shared/data/tiny-imagenet-200
TINY := data/tiny-imagenet-200

.PHONY: install quickstart quickstart-offline test test-quick benchmark tiny-imagenet clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## The main job: one mollified trial on CIFAR-10 (downloaded by torchvision on first use), into ./mlflow.db
quickstart: $(STAMP)
	$(PY) -m trainables run --config configs/quickstart.yaml

## The same without internet: 10 Tiny ImageNet classes at 32 px from ../shared/data
quickstart-offline: $(STAMP) $(TINY)/wnids.txt
	$(PY) -m trainables run --config configs/quickstart.yaml --set dataset=tinyimagenet \
	    --set data_root=$(TINY) --set num_classes=10 --set image_size=32

$(TINY)/wnids.txt:
	@test -d $(SHARED_TINY) || { echo "no $(SHARED_TINY): get https://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into data/"; exit 1; }
	mkdir -p $(TINY)
	for f in $(SHARED_TINY)/*.tar.gz; do tar -xzf $$f -C $(TINY); done

tiny-imagenet: $(TINY)/wnids.txt

## The tests (the whole suite, CPU); CI runs exactly this
test: $(STAMP)
	$(PY) -m pytest

## Skip the slow tests
test-quick: $(STAMP)
	$(PY) -m pytest -m "not slow"

benchmark: $(STAMP)
	$(PY) benchmarks/throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
