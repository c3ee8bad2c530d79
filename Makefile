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

test: setup browser
	$(VENV)/bin/candlelake install
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

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
