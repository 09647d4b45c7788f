# The two commands of the README:
#   make demo   - set up .venv and run the whole job on a dataset that is available here
#   make test   - set up .venv with the test tools and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DEMO_ARGS ?=

.PHONY: demo test install install-dev browser datasets clean

$(BIN)/cnnlab: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "cnnlab needs Python 3.11 or newer: make $(MAKECMDGOALS) PYTHON=python3.12 (or another)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

install: $(BIN)/cnnlab

# torch for the tests on Keras's torch backend (not a cnnlab dependency): the CPU build that this project's machines
# hold; elsewhere PyTorch's CPU wheels, TORCH="torch --index-url https://download.pytorch.org/whl/cpu"; TORCH= for none
TORCH ?= torch==2.13.0

$(VENV)/.dev-installed: $(BIN)/cnnlab Makefile  # Makefile: a new TORCH is installed too
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(if $(TORCH),$(BIN)/python -m pip install --quiet $(TORCH))
	touch $@

install-dev: $(VENV)/.dev-installed

# Web tests drive Debian's Chromium (never a downloaded browser); root on Debian installs it.
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: browser tests will be skipped (and fail under CI=true)"; }

# Fashion-MNIST for the tests, from Debian's package (an offline copy); root on Debian installs it.
datasets:
	@[ -d /usr/share/datasets/fashion-mnist ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null) || \
	  echo "dataset-fashion-mnist not installed: its tests will be skipped (and fail under CI=true)"; }

demo: install
	@BIN=$(BIN) sh scripts/demo.sh $(DEMO_ARGS)

test: install-dev browser datasets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
