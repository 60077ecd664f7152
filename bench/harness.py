"""Side-by-side benchmark: a gray pool against a stock Ray head on the same
machine, both driven by the stock ray==2.60.0 client with the Ray Client
microbenchmark workloads (client_microbenchmark.py).

    python bench/harness.py --gray-bin bin/gray [--repeats 2] [--filter NAME] [--out bench/results]

Runs alternate (gray, ray, gray, ray, ...) so drift on the machine hits both
sides alike. Writes <out>/<date>-<machine>.md (table and commands) and one PNG
chart per workload (if matplotlib is installed).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MICRO = os.path.join(HERE, "client_microbenchmark.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("nothing listens on port %d" % port)


class GrayPool:
    name = "gray"

    def __init__(self, gray_bin, cpus, log_dir):
        self.port = free_port()
        self.cmd = [gray_bin, "start", "--head", "--port", str(self.port), "--status-port", "0",
                    "--python", sys.executable, "--num-cpus", str(cpus), "--gcs-port", "-1"]
        self.log = open(os.path.join(log_dir, "gray.log"), "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        self.address = "ray://127.0.0.1:%d" % self.port
        # Ray's client server answers before the node can start the
        # per-client server it needs; wait until a client gets through.
        probe = "import ray, sys; ray.init(sys.argv[1], logging_level='ERROR'); ray.get(ray.put(1)); ray.shutdown()"
        for _ in range(10):
            p = subprocess.run([sys.executable, "-c", probe, self.address], capture_output=True, timeout=120)
            if p.returncode == 0:
                break
            time.sleep(2)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class RayHead:
    name = "ray"

    def __init__(self, cpus, log_dir):
        self.port = free_port()
        self.gcs_port = free_port()
        ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
        self.ray_cli = ray_cli
        self.cmd = [ray_cli, "start", "--head", "--port", str(self.gcs_port),
                    "--ray-client-server-port", str(self.port), "--num-cpus", str(cpus),
                    "--include-dashboard=false", "--disable-usage-stats"]
        with open(os.path.join(log_dir, "ray.log"), "w") as log:
            subprocess.run(self.cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        self.address = "ray://127.0.0.1:%d" % self.port
        # Ray's client server answers before the node can start the
        # per-client server it needs; wait until a client gets through.
        probe = "import ray, sys; ray.init(sys.argv[1], logging_level='ERROR'); ray.get(ray.put(1)); ray.shutdown()"
        for _ in range(10):
            p = subprocess.run([sys.executable, "-c", probe, self.address], capture_output=True, timeout=120)
            if p.returncode == 0:
                break
            time.sleep(2)

    def stop(self):
        subprocess.run([self.ray_cli, "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_micro(address, name_filter, out_json):
    cmd = [sys.executable, MICRO, address, "--json", out_json]
    if name_filter:
        cmd += ["--filter", name_filter]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0 or not os.path.exists(out_json):
        sys.stderr.write(p.stdout[-2000:] + p.stderr[-4000:])
        return None, " ".join(cmd)
    with open(out_json) as f:
        return json.load(f), " ".join(cmd)


def progress(done, total, label):
    width = 30
    filled = int(width * done / max(total, 1))
    sys.stderr.write("\r[%s%s] %d/%d %s" % ("#" * filled, "." * (width - filled), done, total, label.ljust(40)))
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


lower = set()  # metrics where lower is better (latencies)


def aggregate(runs):
    """runs: list of result lists -> {metric: (mean, spread, n, error)}"""
    by = {}
    for results in runs:
        for r in results:
            by.setdefault(r["name"], []).append(r)
    out = {}
    for name, rs in by.items():
        ok = [r for r in rs if "mean" in r]
        if not ok:
            out[name] = (None, None, 0, rs[0].get("error"))
            continue
        if ok[0].get("lower_is_better"):
            lower.add(name)
        means = [r["mean"] for r in ok]
        mean = sum(means) / len(means)
        # spread: the larger of the within-run sd and the between-run range/2
        spread = max(max(r["sd"] for r in ok), (max(means) - min(means)) / 2)
        out[name] = (mean, spread, len(ok), None)
    return out


def chart(path, metric, gray, ray):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    vals = [gray[0] or 0, ray[0] or 0]
    errs = [gray[1] or 0, ray[1] or 0]
    ax.bar(["gray", "stock Ray"], vals, yerr=errs, color=["#555555", "#1f77b4"], capsize=6)
    ax.set_title(metric, fontsize=10)
    ax.set_ylabel("ms (lower is better)" if metric in lower else "per second (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gray-bin", required=True)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cpus", type=int, default=os.cpu_count())
    p.add_argument("--filter")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--machine", default=platform.node() or "machine")
    p.add_argument("--reproduce", help="the command line to print as the way to reproduce")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="gray-bench-")
    runs = {"gray": [], "ray": []}
    commands = {}
    total = 2 * a.repeats
    step = 0
    progress(step, total, "starting")
    for i in range(a.repeats):
        for system in ("gray", "ray"):
            progress(step, total, "%s run %d" % (system, i + 1))
            for attempt in range(2):  # a stock Ray head occasionally fails its first client
                target = GrayPool(a.gray_bin, a.cpus, work) if system == "gray" else RayHead(a.cpus, work)
                try:
                    commands[system] = " ".join(target.cmd)
                    res, cmd = run_micro(target.address, a.filter, os.path.join(work, "%s-%d.json" % (system, i)))
                    commands[system + "-client"] = cmd
                finally:
                    target.stop()
                if res is not None:
                    runs[system].append(res)
                    break
            step += 1
    progress(total, total, "done")
    g, r = aggregate(runs["gray"]), aggregate(runs["ray"])
    date = datetime.date.today().isoformat()
    stem = "%s-%s" % (date, a.machine)
    lines = [
        "# gray vs stock Ray: Ray Client microbenchmark (%s, %s)" % (date, a.machine),
        "",
        "Both systems on this machine (%d CPUs offered), driven by the stock ray==2.60.0 client, "
        "%d alternating runs each; each run is 4 rounds of %s s per metric (Ray's timeit)." % (a.cpus, a.repeats, "2"),
        "Values are per second (higher is better) unless the metric says ms (lower is better); "
        "spread is the larger of the within-run standard deviation and half the between-run range. "
        "Ratio = gray / Ray.",
        "",
        "| metric | gray | Ray | ratio |",
        "|---|---|---|---|",
    ]
    charts = []
    for name in sorted(set(g) | set(r)):
        gv, rv = g.get(name, (None, None, 0, "missing")), r.get(name, (None, None, 0, "missing"))

        def fmt(v):
            if v[0] is None:
                return "failed: %s" % (v[3] or "")[:60]
            return "%.4g ± %.2g" % (v[0], v[1])

        ratio = "%.2f×" % (gv[0] / rv[0]) if gv[0] and rv[0] else "n/a"
        if name in lower and gv[0] and rv[0]:
            ratio += " (lower is better)"
        lines.append("| %s | %s | %s | %s |" % (name, fmt(gv), fmt(rv), ratio))
        png = "%s-%s.png" % (stem, name.replace("client: ", "").replace(" ", "_").replace(":", ""))
        if chart(os.path.join(a.out, png), name, gv, rv):
            charts.append("![%s](%s)" % (name, png))
    lines += [""] + charts
    reproduce = a.reproduce or "python bench/harness.py --gray-bin bin/gray --repeats %d --cpus %d%s" % (
        a.repeats, a.cpus, (" --filter '%s'" % a.filter) if a.filter else "")
    lines += [
        "",
        "Reproduce (from the repository root; `make bench` builds and runs the same):",
        "",
        "    " + reproduce,
        "",
        "Commands the harness ran:",
        "",
    ]
    for k, v in sorted(commands.items()):
        lines.append("- %s: `%s`" % (k, v))
    report = os.path.join(a.out, stem + ".md")
    with open(report, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("\nwrote", report)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
