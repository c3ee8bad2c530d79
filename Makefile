# The front door. `make run` sets up and runs the platform; `make test` sets up and runs every test.
# Both are idempotent: a second run installs nothing and starts nothing twice.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9

.PHONY: run test setup browser jars lock lint typecheck down status bench clean

run: setup
	$(VENV)/bin/candlelake up

# Without PYTEST_ARGS, the tiers that start nothing (unit, dags) run in a second pytest beside the ones
# that start real parts on the configured ports (e2e, then integration), which must run one at a time:
# the unit tier mostly waits (measured: 245 s wall for 110 s of CPU), and finishes while the e2e tier is
# still starting the platform. Its output follows the other's; either failing fails the target.
# (pytest-xdist's loadgroup cannot group them: 3.8 renames test ids the way pytest 9 no longer reads.)
test: setup browser
	$(VENV)/bin/candlelake install
ifeq ($(strip $(PYTEST_ARGS)),)
	@mkdir -p test-artifacts
	@$(PY) -m pytest tests/unit tests/dags > test-artifacts/pytest-unit-dags.log 2>&1 & side=$$!; \
	$(PY) -m pytest tests/e2e tests/integration; services=$$?; \
	wait $$side; units=$$?; \
	echo "--- the unit and DAG tiers (run beside; test-artifacts/pytest-unit-dags.log) ---"; \
	cat test-artifacts/pytest-unit-dags.log; \
	echo "pytest: e2e and integration exited $$services, unit and dags exited $$units"; \
	test $$services -eq 0 -a $$units -eq 0
else
	$(PY) -m pytest $(PYTEST_ARGS)
endif

setup: $(VENV)/.installed

# Reinstalled only when the pins or the package metadata change.
$(VENV)/.installed: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(VENV)/bin/uv pip install -q --python $(PY) -r requirements.txt
	$(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e .
	@touch $@

# The dashboard's browser test drives Debian's chromium through its chromedriver (the same version,
# offline, unlike Selenium Manager's download). Installed once; the package lists are refreshed only
# when the install fails without them (a fresh machine or image has none).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }

jars: setup
	$(VENV)/bin/candlelake install

lock: setup
	$(VENV)/bin/uv pip compile requirements.in --override overrides.txt --python-version 3.11 \
		--no-header -o requirements.txt

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

down: setup
	$(VENV)/bin/candlelake down

status: setup
	$(VENV)/bin/candlelake status

clean: down
	rm -rf .runtime
