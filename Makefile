# llmlab — the commands the README names.
#   make lab       create .venv if missing and open JupyterLab on chapters/
#   make test      create .venv if missing and run the whole test suite
#   make test-smoke   the part of it CI also runs on the newest Python (see the target)
#   make release   regenerate chapters/ (learner notebooks) from solutions/ with nbgrader
#   make notebooks rebuild and execute every solutions/ notebook from its .py script
#   make grade NB=chapters/00_intro/00_intro.ipynb   autograde one notebook
#   make book      build the Jupyter Book site into book/_build/html
#   make bench     run every benchmark at full size (writes bench/results/)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
# Which PyTorch build setup installs: cpu (default), cuda (PyPI's CUDA build) or an index URL.
TORCH ?= cpu
TORCH_FLAG := $(if $(filter cpu,$(TORCH)),,$(if $(filter cuda,$(TORCH)),--cuda,--index-url $(TORCH)))
# nbgrader shells out to alembic: the venv's bin/ must be on PATH.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PYTHONHASHSEED := 0

HOST ?= 127.0.0.1
PORT ?= 8888
BROWSER ?= yes
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
NO_BROWSER := $(if $(filter no,$(BROWSER)),--no-browser,)
PYTEST_ARGS ?=
JOBS ?= 2

.PHONY: setup lab test test-smoke release notebooks grade book bench lint clean

$(VENV)/.lab: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip>=25"
	$(PY) tools/install_torch.py $(TORCH_FLAG)
	$(PIP) -e ".[lab]"
	touch $@

$(VENV)/.dev: $(VENV)/.lab
	$(PIP) -e ".[dev]"
	touch $@

setup: $(VENV)/.dev

lab: $(VENV)/.lab
	cd chapters && $(abspath $(VENV))/bin/jupyter lab --ip=$(HOST) --port=$(PORT) $(NO_BROWSER) $(ROOT_FLAG)

test: $(VENV)/.dev
	$(PY) -m pytest -n $(JOBS) --dist loadfile --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--nbval-cell-timeout 600 -p no:cacheprovider --durations=25 tests solutions $(PYTEST_ARGS)

# The check CI runs on the newest supported Python as well (make test-smoke PYTHON=python3.13
# VENV=.venv-3.13): the unit and parity tests and one end-to-end grade. (Saved notebook outputs
# are compared by `make test`; on the newest Python, torch may be a CUDA build, whose kernels
# round differently.)
test-smoke: $(VENV)/.dev
	$(PY) -m pytest -n $(JOBS) --dist loadfile -p no:cacheprovider -m "not network" tests \
		--ignore=tests/platform --ignore=tests/book tests/platform/test_grading.py $(PYTEST_ARGS)

release: $(VENV)/.dev
	$(PY) tools/notebooks.py release

notebooks: $(VENV)/.dev
	$(PY) tools/notebooks.py build

grade: $(VENV)/.lab
	$(VENV)/bin/llmlab grade $(NB)

book: $(VENV)/.dev
	$(PY) tools/book.py

bench: $(VENV)/.dev
	for b in bench/bench_*.py; do $(PY) -m bench.$$(basename $$b .py) --size full || exit 1; done

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check llmlab tests tools bench book

clean:
	rm -rf book/_build .pytest_cache
