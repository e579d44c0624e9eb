# Two commands on a fresh machine: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTO_OUT := decision_engine/_proto
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit rules-test examples-test ops-tools ops-test protos core bench bench-cluster dashboard clean install

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) protos

# Generated code comes from the .proto contract; imports are rewritten so the
# package does not depend on a top-level `decision` module.
protos: $(STAMP)
	rm -rf $(PROTO_OUT)/decision
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -I protos \
	  --python_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) --mypy_out=$(PROTO_OUT) --mypy_grpc_out=$(PROTO_OUT) \
	  protos/decision/v1/decision.proto
	touch $(PROTO_OUT)/decision/__init__.py $(PROTO_OUT)/decision/v1/__init__.py
	sed -i 's/^from decision\.v1 import/from decision_engine._proto.decision.v1 import/' \
	  $(PROTO_OUT)/decision/v1/*.py $(PROTO_OUT)/decision/v1/*.pyi

# The pure decision core compiled with mypyc, in place (build_core.py; needs the C compiler
# durable_rules needs too). Rebuilt when a source of it changed; until then, or with
# DECISION_ENGINE_PURE_PYTHON=1, the package runs those modules from source.
core: install
	$(BIN)/python build_core.py

run: core
	$(BIN)/decision-engine serve

# lint-imports checks the layers written down in pyproject.toml ([tool.importlinter]).
lint: install
	$(BIN)/ruff check decision_engine tests bench build_core.py
	$(BIN)/ruff format --check decision_engine tests bench build_core.py
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: that is a failure of ours, not a pass. The
# core's own tests run a second time on its sources: the fallback when it is not compiled.
unit: core ops-tools
	$(BIN)/pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc
	DECISION_ENGINE_PURE_PYTHON=1 $(BIN)/pytest -q tests/decide tests/ruleset; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

rules-test: core
	$(BIN)/decision-engine rules test rules

# Every ruleset under examples/ is checked, tested, simulated (generated customers, and its
# own population/customers.jsonl with contexts.jsonl when it has them) and generates profiles.
examples-test: core
	@set -e; for dir in examples/*/; do dir=$${dir%/}; echo "== $$dir"; \
	  $(BIN)/decision-engine rules check $$dir; \
	  $(BIN)/decision-engine rules test $$dir --coverage; \
	  $(BIN)/decision-engine simulate --rules $$dir --count 500 > /dev/null; \
	  if [ -f $$dir/population/customers.jsonl ]; then \
	    contexts=; if [ -f $$dir/population/contexts.jsonl ]; then contexts="--contexts $$dir/population/contexts.jsonl"; fi; \
	    $(BIN)/decision-engine simulate --rules $$dir --population $$dir/population/customers.jsonl $$contexts > /dev/null; \
	  fi; \
	  $(BIN)/decision-engine profiles generate --rules $$dir --count 100 > /dev/null; \
	  echo "ok: $$dir checked, tested, simulated"; \
	done

test: lint typecheck rules-test examples-test ops-test unit

# Prometheus and promtool (Debian's prometheus package) for the operations kit's checks
# and the test that scrapes a real serve, and nginx for the replicas' load balancer test;
# installed when missing (as root, as in CI).
ops-tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && \
	  { command -v nginx >/dev/null || test -x /usr/sbin/nginx; } || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends prometheus nginx-light >/dev/null; \
	  else echo "prometheus, promtool or nginx is missing: sudo apt-get install prometheus nginx-light" >&2; exit 1; fi; }

# The alert rules and the Prometheus config of ops/, checked and unit-tested.
ops-test: ops-tools
	promtool check config ops/prometheus/prometheus.yml
	promtool check rules ops/prometheus/alerts.yml
	promtool test rules ops/prometheus/alerts_test.yml

bench: core
	$(BIN)/python -c 'import zen' 2>/dev/null || $(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench.run

# docs/dashboard.png: the Grafana dashboard's queries on a real Prometheus, plotted (~4 min).
bench-cluster: install ops-tools
	$(BIN)/python -m bench.cluster

dashboard: install ops-tools
	$(BIN)/python -m bench.dashboard

clean:
	$(PYTHON) build_core.py --clean
	rm -rf build $(VENV) $(PROTO_OUT)/decision var .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
