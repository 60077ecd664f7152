# gray: build, test and run a pool. `make test` is what CI runs.
VENV   ?= .venv
PY     := $(VENV)/bin/python
GO     ?= go
GRAY   := bin/gray
PYTEST_ARGS ?=
# go-nvml's cgo build warns about every NVML 13 deprecation; keep logs readable.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: all build test test-go test-py venv pool clean bench ci-deps bwrap-dep

all: build

build:
	$(GO) build -o $(GRAY) ./cmd/gray

# A virtual environment with the stock Ray client the conformance tests drive
# (and the workers run with).
# solders bundles LiteSVM, the Solana VM the settlement tests pay in.
# Tune, Train, Data and Serve are there for the native-mode tests
# (tests/test_native_libs.py): stock drivers run them on gray's GCS and raylet.
# uv: runtime_env={"uv": [...]} environments install with the node's uv.
venv: $(VENV)/.installed-4
$(VENV)/.installed-4:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "ray[client,tune,train,data,serve]==2.60.0" pytest numpy "solders==0.29.0" uv
	touch $@

# System packages the tests need, installed with apt-get when missing:
# redis-server, which the Redis ledger backend's tests (billing/ledger) start;
# chromium-headless-shell, the real browser the dashboard tests drive;
# openssl, which the TLS tests make a client certificate with; and
# bubblewrap, which sandboxes the pools' workers (gray start refuses to
# run without it unless --sandbox=off).
ci-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
		SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server; }
	@command -v openssl >/dev/null 2>&1 || { \
		SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssl; }
	@command -v chromium-headless-shell >/dev/null 2>&1 || command -v chromium >/dev/null 2>&1 || { \
		SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium-headless-shell; }
	@$(MAKE) --no-print-directory bwrap-dep

bwrap-dep:
	@command -v bwrap >/dev/null 2>&1 || { \
		SUDO=; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -q && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap; }

test: ci-deps build venv test-go test-py

# Under make, the Redis backend's tests fail instead of skipping without
# redis-server.
test-go: export GRAY_REQUIRE_REDIS := 1
test-go:
	$(GO) vet ./...
	GRAY_PYTHON=$(abspath $(PY)) $(GO) test ./...

# Likewise the Redis head-restart test (tests/test_head_restart.py).
test-py: export GRAY_REQUIRE_REDIS := 1
test-py: build venv
	GRAY_BIN=$(abspath $(GRAY)) $(PY) -m pytest -q $(PYTEST_ARGS) tests

# Start a single-machine pool (head + local provider) on 127.0.0.1:10001.
pool: bwrap-dep build venv
	$(GRAY) start --head --python $(abspath $(PY))

clean:
	rm -rf bin

include proto/proto.mk

# Side-by-side benchmark against stock Ray (results in bench/results/):
# the Ray Client microbenchmark workloads, then task throughput with 1/4/16
# providers, the control-plane scale test with thousands of simulated
# providers, transfers/latency over emulated WAN links, and native mode
# (stock ray.init(address=...) drivers on gray's GCS/raylet/plasma vs stock).
bench: build venv
	$(VENV)/bin/pip install -q matplotlib
	$(GO) build -o bin/graysim ./cmd/graysim
	$(GO) build -o bin/graywan ./cmd/graywan
	$(GRAY) bench --python $(abspath $(PY)) $(BENCH_ARGS)
	$(PY) bench/providers.py --gray $(GRAY)
	$(PY) bench/scale.py --gray $(GRAY) --graysim bin/graysim
	$(PY) bench/wan.py --gray-bin $(GRAY) --graywan-bin bin/graywan
	$(PY) bench/native.py --gray $(GRAY)
