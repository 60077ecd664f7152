"""Side-by-side benchmark of native mode: stock drivers with
ray.init(address=HOST:PORT) on a gray head (gray's Go GCS, raylet and plasma)
and on a stock `ray start --head`, on the same machine, alternating.

    python bench/native.py --gray bin/gray [--cpus 2] [--repeats 3] [--scale 1.0] [--out bench/results]

Writes <out>/<date>-native-<machine>.md with medians, spreads and gray/Ray
ratios (higher is better for every metric but the control plane's CPU time:
gray's process against stock Ray's raylet and GCS server).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "native_workload.py")


# The clusters are the native test suite's: a gray head serving native Ray,
# and a stock `ray start --head`, each in a private temp dir.
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from native_pool import NativePool, StockRay  # noqa: E402


CONTROL_PLANE = ("gray", "raylet", "gcs_server")


def control_plane_cpu(system):
    """CPU seconds used so far by the cluster's control plane: gray's one
    process, or stock Ray's raylet and GCS (not workers, not the driver)."""
    import ray  # noqa: F401  (puts the psutil Ray ships on sys.path)
    import psutil
    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmd = proc.info["cmdline"] or []
            if proc.info["name"] in CONTROL_PLANE and any(system.tmp in a for a in cmd):
                t = proc.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def stats(results, side, name):
    """Median, half the range and count of one metric over a side's runs."""
    vals = [v["value"] for run in results[side] for v in run if v["name"] == name]
    if not vals:
        return None, None, 0
    return statistics.median(vals), (max(vals) - min(vals)) / 2, len(vals)


def table_rows(results, names):
    """Markdown rows: each metric for gray and stock Ray, and their ratio."""
    rows = []
    fmt = lambda m, s, n: "–" if m is None else "%.3g ± %.2g (n=%d)" % (m, s, n)  # noqa: E731
    for name in names:
        g, gs, gn = stats(results, "gray", name)
        r, rs, rn = stats(results, "ray", name)
        ratio = "%.2f×" % (g / r) if g and r else "–"
        if name.startswith("control-plane"):
            ratio = "%.2f× (lower is better)" % (g / r) if g and r else "–"
        rows.append("| %s | %s | %s | %s |" % (name, fmt(g, gs, gn), fmt(r, rs, rn), ratio))
    return rows


def run(system, scale, tmp, i):
    out = os.path.join(tmp, "%s-%d.json" % (system.name, i))
    cmd = [sys.executable, WORKLOAD, system.address, "--json", out, "--scale", str(scale)]
    before = control_plane_cpu(system)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=system.env)
    cpu = control_plane_cpu(system) - before
    if p.returncode != 0:
        sys.stderr.write("%s run %d failed:\n%s\n%s\n" % (system.name, i, p.stdout[-3000:], p.stderr[-5000:]))
        return None
    with open(out) as f:
        res = json.load(f)
    res.append({"name": "control-plane CPU for the whole workload (s, lower is better)", "unit": "s", "value": cpu})
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gray", default="bin/gray")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="native-bench-")
    results = {"gray": [], "ray": []}
    for i in range(a.repeats):
        for make in (lambda: NativePool(os.path.abspath(a.gray), num_cpus=a.cpus), lambda: StockRay(num_cpus=a.cpus)):
            system = make()
            try:
                r = run(system, a.scale, tmp, i)
                if r:
                    results[system.name].append(r)
                    print(system.name, i, json.dumps(r), flush=True)
            finally:
                system.stop()
    names = [r["name"] for r in (results["gray"] or results["ray"])[0]] if (results["gray"] or results["ray"]) else []

    day = datetime.date.today().isoformat()
    machine = "%s-%dcpu" % (platform.machine(), os.cpu_count())
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "%s-native-%s.md" % (day, machine))
    lines = [
        "# Native mode: gray vs stock Ray 2.60.0, same machine (%s)" % day, "",
        "Command: `python bench/native.py --gray %s --cpus %d --repeats %d --scale %s`" % (a.gray, a.cpus, a.repeats, a.scale),
        "", "Both sides: one node with %d CPUs, a stock `ray.init(address=HOST:PORT)` driver running "
        "bench/native_workload.py; runs alternate gray, ray, gray, ...; median ± half the range." % a.cpus, "",
        "| workload | gray | stock Ray | gray / Ray |", "|---|---|---|---|",
    ]
    lines += table_rows(results, names)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("wrote", path)


if __name__ == "__main__":
    main()
