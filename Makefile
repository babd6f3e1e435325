# Two commands on a fresh clone (Python 3.10+ and PyPI reachable, no GPU needed):
#   make course   set up, then run every notebook on the embedded model (CI setting; FULL=1: the full
#                 setting) and build the course site -> course_output/index.html
#   make test     set up, then run all tests: unit tests and every notebook under nbval (CI setting)
# Both install into the active Python environment. For an isolated one:
#   python3 -m venv .venv && make test PYTHON=.venv/bin/python
PYTHON ?= python3
TORCH ?= torch==2.13.0
FULL ?=

.PHONY: setup course test bench clean

.setup-done: pyproject.toml
	$(PYTHON) -m pip install -q "$(TORCH)" "setuptools>=61"
	$(PYTHON) -m pip install -q --no-build-isolation -e ".[dev]"
	touch $@

setup: .setup-done

course: setup
	HF_HUB_OFFLINE=1 $(PYTHON) -m course_lib.run_course --out course_output $(if $(filter 1 yes true,$(FULL)),--full,)

test: setup
	HF_HUB_OFFLINE=1 COURSE_SMOKE=1 $(PYTHON) -m pytest tests notebooks --nbval-lax --durations=15

bench: setup
	$(PYTHON) -m course_tools.bench base

clean:
	rm -rf course_output .setup-done
