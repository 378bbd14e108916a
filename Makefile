# vsaimage — `make demo` and `make test` each run the set-up first.
PY        := /usr/bin/python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
# Nested KVM is not usable on many build hosts; the appliance runs under TCG,
# which is what a real Xen dom0 gets too.
export LIBGUESTFS_BACKEND_SETTINGS ?= force_tcg

.PHONY: setup test test-unit lint demo bench xen-test clean

setup: $(STAMP)
	@sh scripts/setup-system.sh

$(STAMP): pyproject.toml scripts/setup-system.sh
	sh scripts/setup-system.sh
	test -x $(BIN)/python || $(PY) -m venv --system-site-packages $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

lint: setup
	$(BIN)/ruff check vsaimage tests bench fixtures
	$(BIN)/mypy
	$(BIN)/lint-imports

test-unit: setup
	$(BIN)/pytest -m 'not integration' -q

test: lint
	$(BIN)/pytest -q --durations=10

demo: setup
	sh scripts/demo.sh

bench: setup
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.bench_initrd --reps 3
	$(BIN)/python -m bench.bench_background
	$(BIN)/python -m bench.bench_inputs
	$(BIN)/python -m bench.bench_boot
	$(BIN)/python -m bench.bench_tests

xen-test: setup
	$(BIN)/pytest -q tests/test_xen_*.py

clean:
	rm -rf $(VENV) .cache build demo bench/work
