# Two commands on a fresh clone (Python 3.10+ and PyPI reachable, no GPU needed):
#   make course   set up, then run every notebook on the embedded model -> course_output/index.html
#   make test     set up, then run all tests: unit tests and every notebook under nbval (CI setting)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: setup course test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

course: setup
	$(PY) -m course_lib.run_course --out course_output

test: setup
	HF_HUB_OFFLINE=1 COURSE_SMOKE=1 $(PY) -m pytest tests notebooks --nbval-lax --durations=15

bench: setup
	$(PY) -m course_lib.bench base

clean:
	rm -rf $(VENV) course_output
