#!/usr/bin/env bash
# gpu-check.sh: acceptance check of a prebuilt gray binary on a machine with
# real NVIDIA GPUs (H100/H200, CUDA 13 driver, Python with PyTorch). That
# machine needs no Go toolchain and no network.
#
# Usage:
#   scripts/gpu-check.sh GRAY_BIN [RAY_WHEEL_DIR]
#
#   GRAY_BIN       a linux/amd64 gray binary built elsewhere, e.g.
#                    CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" \
#                    GOOS=linux GOARCH=amd64 go build -o gray ./cmd/gray
#   RAY_WHEEL_DIR  optional: a directory of wheels holding ray[client]==2.60.0
#                  and its dependencies (pip download ... on a networked
#                  machine). They are installed, offline, into a venv that
#                  also sees the system site-packages (so torch is visible).
#
# Steps:
#   1. `gray gpu-check`: runs the CUDA verification kernels on every GPU and
#      prints a JSON report; scripts/gpu_check.py validates it and cross-checks
#      the numbers with PyTorch.
#   2. If ray==2.60.0 is importable (from RAY_WHEEL_DIR or already installed):
#      starts a pool (`gray start --head ...`), runs num_gpus=1 tasks with the
#      stock ray client that do a PyTorch matmul on CUDA, checks the results.
#
# Environment:
#   PYTHON        Python with torch (default python3)
#   PORT          Ray Client port of the pool (default 10001)
#   STATUS_PORT   HTTP status port of the pool (default 8265)
#   REQUIRE_POOL  1: a missing ray makes step 2 fail instead of being skipped
#   WORKDIR       where logs and the venv go (default: a new temp dir, kept)
#
# Exit status: 0 when every step that ran passed, 1 otherwise.

set -u -o pipefail

GRAY_BIN=${1:-}
WHEELS=${2:-}
PYTHON=${PYTHON:-python3}
PORT=${PORT:-10001}
STATUS_PORT=${STATUS_PORT:-8265}
REQUIRE_POOL=${REQUIRE_POOL:-0}
HERE=$(cd "$(dirname "$0")" && pwd)
HELPER="$HERE/gpu_check.py"

if [ -z "$GRAY_BIN" ] || [ ! -x "$GRAY_BIN" ]; then
	echo "usage: $0 GRAY_BIN [RAY_WHEEL_DIR]   (GRAY_BIN must be an executable gray binary)" >&2
	exit 2
fi
GRAY_BIN=$(cd "$(dirname "$GRAY_BIN")" && pwd)/$(basename "$GRAY_BIN")
WORKDIR=${WORKDIR:-$(mktemp -d "${TMPDIR:-/tmp}/gray-gpu-check.XXXXXX")}
mkdir -p "$WORKDIR"

failed=0
fail() { echo "FAIL: $*"; failed=1; }
section() { printf '\n==== %s ====\n' "$*"; }

POOL_PID=""
cleanup() {
	# Stop the pool this script started (only that process, by its pid).
	if [ -n "$POOL_PID" ] && kill -0 "$POOL_PID" 2>/dev/null; then
		kill -TERM "$POOL_PID" 2>/dev/null
		for _ in $(seq 1 150); do
			kill -0 "$POOL_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$POOL_PID" 2>/dev/null && kill -KILL "$POOL_PID" 2>/dev/null
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
section "machine"
echo "work dir: $WORKDIR"
uname -srm
if command -v nvidia-smi >/dev/null 2>&1; then
	nvidia-smi --query-gpu=index,name,uuid,memory.total,driver_version --format=csv,noheader || true
else
	echo "(no nvidia-smi)"
fi
"$PYTHON" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' ||
	echo "(no torch in $PYTHON)"
if ! "$GRAY_BIN" --help >/dev/null 2>&1; then
	fail "$GRAY_BIN does not run here (wrong architecture or libc?)"
	file "$GRAY_BIN" 2>/dev/null || true
	exit 1
fi

# ---------------------------------------------------------------------------
section "gray gpu-check"
REPORT="$WORKDIR/gpu-check.json"
if ! "$GRAY_BIN" gpu-check --help >/dev/null 2>&1; then
	fail "this gray binary has no gpu-check command (wire gpu/verify.RunCheck into the CLI)"
	exit 1
fi
start_ns=$(date +%s%N)
"$GRAY_BIN" gpu-check >"$REPORT" 2>"$WORKDIR/gpu-check.log"
rc=$?
end_ns=$(date +%s%N)
cat "$REPORT"
echo "--- stderr:"
cat "$WORKDIR/gpu-check.log"
echo "gray gpu-check exited $rc after $(((end_ns - start_ns) / 1000000)) ms (process start to exit)"
[ "$rc" -eq 0 ] || fail "gray gpu-check exited $rc"

section "report and PyTorch cross-check"
"$PYTHON" "$HELPER" report "$REPORT" || fail "report checks"

# ---------------------------------------------------------------------------
section "pool with the stock ray client"
POOL_PY="$PYTHON"
if [ -n "$WHEELS" ]; then
	echo "installing ray[client]==2.60.0 from $WHEELS (offline) into $WORKDIR/venv"
	if "$PYTHON" -m venv --system-site-packages "$WORKDIR/venv" &&
		"$WORKDIR/venv/bin/python" -m pip install --no-index --find-links "$WHEELS" "ray[client]==2.60.0" \
			>"$WORKDIR/pip.log" 2>&1; then
		POOL_PY="$WORKDIR/venv/bin/python"
	else
		tail -n 30 "$WORKDIR/pip.log" 2>/dev/null
		fail "installing ray from $WHEELS"
	fi
fi

if ! "$POOL_PY" -c 'import ray, torch; assert ray.__version__ == "2.60.0", ray.__version__' 2>"$WORKDIR/ray-import.log"; then
	cat "$WORKDIR/ray-import.log"
	if [ "$REQUIRE_POOL" = 1 ]; then
		fail "ray==2.60.0 and torch are not both importable by $POOL_PY"
	else
		echo "SKIPPED: ray==2.60.0 (with torch) is not importable by $POOL_PY; pass a wheel directory to run this step"
	fi
else
	POOL_LOG="$WORKDIR/pool.log"
	echo "starting: gray start --head --python $POOL_PY --port $PORT --status-port $STATUS_PORT --node-port -1"
	"$GRAY_BIN" start --head --python "$POOL_PY" --port "$PORT" --status-port "$STATUS_PORT" \
		--node-port -1 --state-dir "$WORKDIR/head-state" >"$POOL_LOG" 2>&1 &
	POOL_PID=$!
	# Wait for the Ray Client port (bash's /dev/tcp; no nc needed).
	ready=0
	for _ in $(seq 1 600); do
		if ! kill -0 "$POOL_PID" 2>/dev/null; then
			break
		fi
		if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
			ready=1
			break
		fi
		sleep 0.1
	done
	if [ "$ready" != 1 ]; then
		fail "the pool did not open port $PORT"
	else
		"$GRAY_BIN" status --address "127.0.0.1:$STATUS_PORT" || fail "gray status"
		"$GRAY_BIN" status --address "127.0.0.1:$STATUS_PORT" --json >"$WORKDIR/status.json" 2>&1 || true
		"$POOL_PY" "$HELPER" pool "127.0.0.1:$PORT" "$REPORT" || fail "pool checks"
	fi
	cleanup
	echo "--- pool log (last 60 lines of $POOL_LOG):"
	tail -n 60 "$POOL_LOG"
fi

# ---------------------------------------------------------------------------
section "result"
echo "logs: $WORKDIR"
if [ "$failed" -ne 0 ]; then
	echo "GPU CHECK FAILED"
	exit 1
fi
echo "GPU CHECK PASSED"
exit 0
