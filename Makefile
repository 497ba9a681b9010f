# One command each; a fresh machine needs only python3 (3.11) and make.
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: install demo test dev bench clean

install: $(STAMP)

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --quiet
	touch $(STAMP)

demo: install  ## fresh demo: generate data, start the sandbox, materialize everything, say where it is
	$(VENV)/bin/ledgerlink demo

test: install  ## the whole suite, against the emulators over real HTTP
	$(VENV)/bin/python -m pytest -n auto --dist loadfile

dev: install  ## the Dagster UI on the sandbox
	$(VENV)/bin/ledgerlink dev

bench: install  ## benchmarks with their named peers (not part of the tests)
	$(VENV)/bin/python -m tests.bench.bench_extract
	$(VENV)/bin/python -m tests.bench.bench_extract_xero
	$(VENV)/bin/python -m tests.bench.bench_extract_crm
	$(VENV)/bin/python -m tests.bench.bench_reconcile
	$(VENV)/bin/python -m tests.bench.bench_writeback

clean:
	rm -rf data .pytest_cache
