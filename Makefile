# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs undo + the offline models, runs the UNDO demo
#   make test   creates .venv the same way, runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.undo-installed
# CPU machines pin the local CPU torch wheel; GPU users: make TORCH_CONSTRAINT= ...
# (or plain pip, see README) to keep the CUDA torch they already have.
TORCH_CONSTRAINT ?= -c requirements/cpu-constraints.txt
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS ?= 1

.PHONY: install demo test lint bench quality clean browser

$(STAMP): pyproject.toml requirements/offline.txt requirements/cpu-constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_CONSTRAINT) -e ".[dev,plot,gym]"
	$(PY) -m pip install -q --no-deps -r requirements/offline.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/undo demo

# the report test renders report.html in headless Chromium (Debian's package), installed once
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  $(SUDO) apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q --no-install-recommends chromium >/dev/null; } || \
	  echo "make: could not install chromium (apt-get); the report test needs it"; }

test: $(STAMP) browser
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/teacher_client.py --inprocess
	$(PY) bench/student.py

quality: $(STAMP)
	$(PY) bench/quality.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
