"""Native Ray across two nodes, gray vs stock Ray on the same machine: a stock
driver on the head sends all its work to a second node (it alone has the
resource `side`), so every task, actor call and object crosses nodes.

    python bench/native_remote.py --gray bin/gray [--repeats 2]

gray's second node is a provider joined over QUIC hosting native Ray through
gray's tunnel (`--native`); stock Ray's is `ray start --address` on
127.0.0.2 (plain TCP on loopback, no encryption). Writes
<out>/<date>-native-remote-<machine>.md with medians and gray/Ray ratios.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from native_pool import SecondNode, make_target  # noqa: E402
from native import table_rows  # noqa: E402  (bench/native.py: the same table)

WORKLOAD = r'''
import json, sys, time
import numpy as np, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
out = []
def rate(name, n, fn, unit):
    t = time.perf_counter(); fn(); dt = time.perf_counter() - t
    out.append({"name": name, "value": n / dt, "unit": unit})

@ray.remote(num_cpus=1, resources={"side": 0.01})
def nop():
    return None

@ray.remote(num_cpus=0, resources={"side": 0.01})
class Actor:
    def f(self):
        return None

@ray.remote(num_cpus=1, resources={"side": 0.01})
def make(n):
    return np.ones(n, dtype=np.uint8)

@ray.remote(num_cpus=1, resources={"side": 0.01})
def size(a):
    return a.nbytes

ray.get([nop.remote() for _ in range(50)])
rate("tasks on the other node (tasks/s)", 500, lambda: ray.get([nop.remote() for _ in range(500)]), "tasks/s")
a = Actor.remote(); ray.get(a.f.remote())
rate("actor calls to the other node, 1000 in flight (calls/s)", 1000, lambda: ray.get([a.f.remote() for _ in range(1000)]), "calls/s")
def sync_calls():
    for _ in range(200):
        ray.get(a.f.remote())
rate("actor calls to the other node, one at a time (calls/s)", 200, sync_calls, "calls/s")
n = 64 << 20
ray.get(size.remote(ray.put(np.ones(1 << 20, dtype=np.uint8))))
def there():
    for _ in range(4):
        assert ray.get(size.remote(ray.put(np.ones(n, dtype=np.uint8)))) == n
rate("64 MiB put here, read there (MiB/s)", 4 * 64, there, "MiB/s")
def back():
    for _ in range(4):
        assert ray.get(make.remote(n)).nbytes == n
rate("64 MiB made there, read here (MiB/s)", 4 * 64, back, "MiB/s")
json.dump(out, open(sys.argv[2], "w"))
'''


def run(head, tmp, i):
    prog = os.path.join(tmp, "workload.py")
    with open(prog, "w") as f:
        f.write(WORKLOAD)
    out = os.path.join(tmp, "%s-%d.json" % (head.name, i))
    p = subprocess.run([sys.executable, prog, head.address, out], capture_output=True, text=True, timeout=900, env=head.env)
    if p.returncode != 0:
        sys.stderr.write("%s run %d failed:\n%s\n%s\n" % (head.name, i, p.stdout[-3000:], p.stderr[-5000:]))
        return None
    with open(out) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gray", default="bin/gray")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    gray = os.path.abspath(a.gray)
    tmp = tempfile.mkdtemp(prefix="native-remote-")
    results = {"gray": [], "ray": []}
    for i in range(a.repeats):
        for target in ("gray", "ray"):
            os.environ["NATIVE_TARGET"] = target
            head = make_target(gray, num_cpus=1, providers=target == "gray")
            node = None
            try:
                node = SecondNode(gray, head, "quic" if target == "gray" else "lan")
                head.check("""
                    import ray, time
                    ray.init(address=ADDRESS)
                    deadline = time.time() + 60
                    while ray.cluster_resources().get("side") != 3:
                        assert time.time() < deadline
                        time.sleep(0.1)
                """)
                r = run(head, tmp, i)
                if r:
                    results[target].append(r)
                    print(target, i, json.dumps(r), flush=True)
            finally:
                if node:
                    node.stop()
                head.stop()
    os.environ.pop("NATIVE_TARGET", None)
    first = results["gray"] or results["ray"]
    names = [r["name"] for r in first[0]] if first else []

    day = datetime.date.today().isoformat()
    machine = "%s-%dcpu" % (platform.machine(), os.cpu_count())
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, "%s-native-remote-%s.md" % (day, machine))
    lines = [
        "# Native Ray across two nodes: gray vs stock Ray 2.60.0, same machine (%s)" % day, "",
        "Command: `python bench/native_remote.py --gray %s --repeats %d`" % (a.gray, a.repeats), "",
        "A stock driver on the head (1 CPU) sends all work to a second node (2 CPUs, `side`=3). gray: a "
        "provider joined over QUIC, native Ray through gray's tunnel (TLS 1.3); stock Ray: `ray start "
        "--address` on 127.0.0.2 (plain TCP). Runs alternate gray, ray, ...; median ± half the range.", "",
        "| workload | gray | stock Ray | gray / Ray |", "|---|---|---|---|",
    ]
    lines += table_rows(results, names)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print("wrote", path)


if __name__ == "__main__":
    main()
