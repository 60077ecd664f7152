"""Task throughput and latency of a gray pool with 1, 4 and 16 provider
processes on this machine (the head offers no CPU, so every task crosses the
head<->provider QUIC protocol), next to a stock Ray head with the same total
CPUs on the same machine.

    python bench/providers.py --gray bin/gray [--sizes 1,4,16] [--tasks 2000] [--repeats 3]

Writes bench/results/<date>-providers-<machine>.md. Numbers on a small VM are
bounded by its cores: all providers, their workers, the head and the client
share them.
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CLIENT = r"""
import json, os, statistics, sys, time
import ray
ray.init(os.environ["ADDR"])
want = float(os.environ["CPUS"])
deadline = time.time() + 120
while ray.cluster_resources().get("CPU", 0) < want and time.time() < deadline:
    time.sleep(0.2)

@ray.remote(num_cpus=1)
def noop(i):
    return i

ray.get([noop.remote(i) for i in range(50)])  # warm the workers
n = int(os.environ["TASKS"])
t0 = time.perf_counter()
out = ray.get([noop.remote(i) for i in range(n)])
dt = time.perf_counter() - t0
assert out == list(range(n))
lat = []
for i in range(200):
    t = time.perf_counter()
    ray.get(noop.remote(i))
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
print("RESULT " + json.dumps({"tps": n / dt, "p50": lat[len(lat) // 2], "p99": lat[int(len(lat) * 0.99)]}))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, log):
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(procs):
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def client(addr, cpus, tasks):
    env = dict(os.environ, ADDR=addr, CPUS=str(cpus), TASKS=str(tasks))
    out = subprocess.run([sys.executable, "-c", CLIENT], capture_output=True, text=True, timeout=900, env=env)
    m = re.search(r"RESULT (.*)", out.stdout)
    if not m:
        raise RuntimeError(out.stdout + out.stderr)
    import json

    return json.loads(m.group(1))


def run_gray(gray, n, tasks, tmp):
    port, status = free_port(), free_port()
    env = dict(os.environ, TMPDIR=tmp)  # own pid file: never stop other pools
    log = open(os.path.join(tmp, "head.log"), "w")
    head = subprocess.Popen([gray, "start", "--head", "--num-cpus", "0", "--port", str(port), "--status-port", str(status),
                             "--node-port", "0", "--gcs-port", "-1", "--state-dir", os.path.join(tmp, "head"), "--python", sys.executable,
                             "--prestart-workers", "0"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    procs = [head]
    try:
        deadline = time.time() + 60
        cmd = None
        while time.time() < deadline and not cmd:
            m = re.search(r"Providers:\s+gray start --address=(\S+) --token=(\S+)", open(log.name).read())
            cmd = m and (m.group(1), m.group(2))
            time.sleep(0.1)
        for i in range(n):
            plog = open(os.path.join(tmp, "p%d.log" % i), "w")
            procs.append(subprocess.Popen([gray, "start", "--address", cmd[0], "--token", cmd[1], "--num-cpus", "1",
                                           "--state-dir", os.path.join(tmp, "p%d" % i), "--python", sys.executable,
                                           "--prestart-workers", "1"],
                                          stdout=plog, stderr=subprocess.STDOUT, env=env, start_new_session=True))
        return client("ray://127.0.0.1:%d" % port, n, tasks)
    finally:
        stop(procs)


def run_ray(n, tasks, tmp):
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    port, gcs = free_port(), free_port()
    env = dict(os.environ, RAY_TMPDIR=tmp)
    subprocess.run([ray_bin, "start", "--head", "--port", str(gcs), "--ray-client-server-port", str(port),
                    "--num-cpus", str(n), "--include-dashboard", "false", "--disable-usage-stats"],
                   check=True, capture_output=True, env=env, timeout=180)
    try:
        for attempt in range(3):
            try:
                return client("ray://127.0.0.1:%d" % port, n, tasks)
            except RuntimeError as e:
                # Ray's client proxier sometimes fails to start the
                # per-client server under load; try again.
                if attempt == 2 or "Starting Ray client server failed" not in str(e):
                    raise
                print("   (ray client server did not start; retrying)", flush=True)
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env, timeout=120)


def cpu_idle(seconds=1.0):
    """Fraction of CPU time idle over the next seconds (from /proc/stat)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[3] + v[4], sum(v)
    i0, t0 = read()
    time.sleep(seconds)
    i1, t1 = read()
    return (i1 - i0) / max(t1 - t0, 1)


def quiet(limit=60):
    """Waits (at most limit seconds) until the machine is nearly idle, so a
    run does not pay for the processes the previous one is still ending."""
    deadline = time.time() + limit
    idle = cpu_idle()
    while idle < 0.9 and time.time() < deadline:
        idle = cpu_idle()
    return idle


def summary(runs):
    """Median of each key over runs, and half the range of tps as spread."""
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["spread"] = (max(r["tps"] for r in runs) - min(r["tps"] for r in runs)) / 2
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gray", default=os.path.join(ROOT, "bin", "gray"))
    ap.add_argument("--sizes", default="1,4,16")
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs per system and size")
    ap.add_argument("--no-ray", action="store_true", help="measure gray only")
    args = ap.parse_args()
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        gs, rs = [], []
        for rep in range(args.repeats):
            tmp = tempfile.mkdtemp(prefix="gray-providers-")
            idle = quiet()
            print("[%s] gray, %d providers, run %d (idle %.0f%%) ..." % (time.strftime("%H:%M:%S"), n, rep + 1, idle * 100), flush=True)
            gs.append(run_gray(args.gray, n, args.tasks, tmp))
            print("   gray %.0f tasks/s p50 %.2f ms p99 %.2f ms" % (gs[-1]["tps"], gs[-1]["p50"], gs[-1]["p99"]), flush=True)
            if not args.no_ray:
                idle = quiet()
                print("[%s] ray, one node with %d CPUs, run %d (idle %.0f%%) ..." % (time.strftime("%H:%M:%S"), n, rep + 1, idle * 100), flush=True)
                rs.append(run_ray(n, args.tasks, tmp))
                print("   ray  %.0f tasks/s p50 %.2f ms p99 %.2f ms" % (rs[-1]["tps"], rs[-1]["p50"], rs[-1]["p99"]), flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append((n, summary(gs), summary(rs) if rs else None))
    date = datetime.date.today().isoformat()
    out = os.path.join(ROOT, "bench", "results", "%s-providers-vm.md" % date)
    with open(out, "w") as f:
        f.write("# Task throughput with 1/4/16 providers (%s, %s, %d cores)\n\n" % (date, platform.node(), os.cpu_count()))
        f.write("Command: `python bench/providers.py --gray bin/gray --sizes %s --tasks %d --repeats %d`\n\n" % (
            args.sizes, args.tasks, args.repeats))
        f.write("gray: head with `--num-cpus 0` and N provider processes with 1 CPU each, joined over QUIC "
                "on loopback (every task crosses the head<->provider protocol). Ray: one stock `ray start --head "
                "--num-cpus N` on the same machine (Ray's own multi-node needs separate machines or containers). "
                "Workload: %d no-op tasks submitted then fetched (throughput), then 200 sequential round trips "
                "(latency). All processes share this machine's %d cores. Each system runs %d times per size, "
                "alternating, each run after the machine is at least 90%% idle; the table has the median run "
                "and ± half the range of throughput.\n\n" % (args.tasks, os.cpu_count(), args.repeats))
        f.write("| providers (CPUs) | gray tasks/s | Ray tasks/s | ratio | gray p50 ms | Ray p50 ms | gray p99 ms | Ray p99 ms |\n")
        f.write("|---|---|---|---|---|---|---|---|\n")
        for n, g, r in rows:
            if r:
                f.write("| %d | %.0f ± %.0f | %.0f ± %.0f | %.2f× | %.2f | %.2f | %.2f | %.2f |\n" % (
                    n, g["tps"], g["spread"], r["tps"], r["spread"], g["tps"] / r["tps"], g["p50"], r["p50"], g["p99"], r["p99"]))
            else:
                f.write("| %d | %.0f ± %.0f | – | – | %.2f | – | %.2f | – |\n" % (n, g["tps"], g["spread"], g["p50"], g["p99"]))
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import charts

        xs = [n for n, _, _ in rows]
        stem = os.path.splitext(out)[0]
        for key, ylabel, name in (("tps", "tasks per second", "throughput"), ("p50", "ms (p50)", "latency")):
            png = "%s-%s.png" % (stem, name)
            if charts.lines(png, "tasks: %s vs providers" % name, "providers (1 CPU each)", ylabel, xs, {
                "gray": [g[key] for _, g, _ in rows], "stock Ray": [r[key] if r else None for _, _, r in rows]}):
                f.write("\n![%s](%s)\n" % (name, os.path.basename(png)))
    print("wrote", out)


if __name__ == "__main__":
    main()
