# npstn: the two Quickstart commands live here.
#   make quickstart -- set up a virtual environment and run the main job
#                      (ST-FCN vs FCN on RTS-distorted MNIST, a few minutes)
#   make test       -- set up a virtual environment and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: quickstart demo test venv clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/npstn quickstart

# the small MLP-on-spirals demo of the hand-written layers (no data needed)
demo: $(STAMP)
	$(VENV)/bin/npstn demo

# one pytest worker per core (pytest-xdist); TEST_WORKERS=0 runs everything in this process
TEST_WORKERS ?= auto
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
