# `make run` and `make test` each create the virtual environment they need.
VENV ?= .venv
PYTHON ?= python3
CONFIG ?= channeld.example.toml
STAMP := $(VENV)/.installed-stamp
# lark-oapi, the official Feishu SDK, is a test oracle for the Feishu emulator only. It pins
# websockets<16, so it lives in its own environment and runs in a subprocess.
LARK_VENV ?= .venv-lark
LARK_STAMP := $(LARK_VENV)/.installed-stamp

.PHONY: run test lint typecheck unit clean proto bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet --editable ".[dev]"
	touch $(STAMP)

$(LARK_STAMP):
	$(PYTHON) -m venv $(LARK_VENV)
	$(LARK_VENV)/bin/pip install --quiet "lark-oapi==1.7.5"
	touch $(LARK_STAMP)

run: $(STAMP)
	$(VENV)/bin/channeld run --config $(CONFIG)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/vulture  # dead code: [tool.vulture] in pyproject.toml

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP) $(LARK_STAMP)
	CHANNELD_LARK_PYTHON=$(abspath $(LARK_VENV))/bin/python $(VENV)/bin/pytest -q

test: lint typecheck unit

# the soak run (not part of `make test`): churn and steady traffic for MINUTES, then the tally
MINUTES ?= 10
.PHONY: soak
soak: $(STAMP)
	$(VENV)/bin/python tools/soak.py --minutes $(MINUTES)

# Benchmarks (docs/bench/, README "Performance"); QUICK=1 runs every scenario at small scale.
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(VENV)/bin/pip install --quiet --editable ".[dev,dashboard]"
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(VENV)/bin/python -m tools.bench $(if $(QUICK),--quick)

# regenerate the Feishu frame module after editing channels/feishu/pbbp2.proto
proto:
	$(PYTHON) -m venv $(VENV)-protoc
	$(VENV)-protoc/bin/pip install --quiet "grpcio-tools==1.85.1"
	$(VENV)-protoc/bin/python -m grpc_tools.protoc -Ichannels/feishu \
		--python_out=channels/feishu --pyi_out=channels/feishu channels/feishu/pbbp2.proto

clean:
	rm -rf $(VENV) $(LARK_VENV) $(VENV)-protoc .state .pytest_cache .mypy_cache .ruff_cache
