# The two commands of the README. Both install what is missing first (tools/install-deps), then
# run inside a private network namespace (tests/private-netns) so nothing can leave the machine.
PY := .venv/bin/python
NODES ?= 3
PRIVATE := tests/private-netns

.PHONY: demo test lint unit install bench clean

install:
	@tools/install-deps

demo: install
	$(PRIVATE) $(PY) -m tests.demo --nodes $(NODES)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

test: install lint
	$(PRIVATE) $(PY) -m pytest

unit: install
	$(PY) -m pytest -m "not kernel and not etcd"

# Every benchmark of bench/README.md, each printing its table with its baseline of the same run.
bench: install
	$(PRIVATE) $(PY) -m bench.etcd_scale
	$(PRIVATE) $(PY) -m bench.contention
	$(PRIVATE) $(PY) -m bench.datapath
	$(PRIVATE) $(PY) -m bench.kube_scale --nodes 5000

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
