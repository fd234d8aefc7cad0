# npstn: the two Quickstart commands live here.
#   make quickstart -- set up a virtual environment and run the main job
#                      (ST-FCN vs FCN on RTS-distorted MNIST, a few minutes)
#   make test       -- set up a virtual environment and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: quickstart demo test venv venv-cuda cuda-compile-check clean

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

# numba-cuda (the CUDA target that `pip install npstn[cuda]` brings) with NVVM, in a venv of its own:
# tests/cuda_compile_check.py compiles every kernel to PTX for sm_90 with it, no GPU needed, which
# catches what the CUDA simulator cannot (typing in the real CUDA target). `make test` runs that
# check when this venv exists (CI makes it); pinned so that CI does not move under us.
CUDA_VENV  ?= .venv-cuda
NUMBA_CUDA ?= numba-cuda[cu12]==0.30.4
$(CUDA_VENV)/.installed:
	@test -x $(CUDA_VENV)/bin/python || $(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install --quiet '$(NUMBA_CUDA)'
	@touch $@

venv-cuda: $(CUDA_VENV)/.installed

cuda-compile-check: venv-cuda
	NUMBA_ENABLE_CUDASIM=0 $(CUDA_VENV)/bin/python tests/cuda_compile_check.py

clean:
	rm -rf $(VENV) $(CUDA_VENV) .pytest_cache .hypothesis
