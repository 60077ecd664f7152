"""Ray Client metrics for three ways of serving ray:// on one machine: stock
Ray's proxier, gray's default front end, and gray with
--ray-client-sessions=native (a stock Ray Client server per session).

    python bench/client_sessions.py --gray bin/gray [--rounds 2] [--out FILE.md]

Each system runs alone (started, measured, stopped), in that order.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import client_microbenchmark as mb  # noqa: E402
from native_pool import NativePool, StockRay  # noqa: E402


def measure(address, rounds, name_filter=None):
    import multiprocessing as mp

    # One ray client per process: each system is measured in a fresh one.
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(address, rounds, name_filter, q))
    p.start()
    res = q.get()
    p.join()
    return res


def _child(address, rounds, name_filter, q):
    mb.ROUNDS = rounds
    q.put(mb.run(address, name_filter, log=lambda s: print("   ", s, flush=True)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gray", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--filter", help="only metrics whose name contains this")
    a = ap.parse_args()
    gray = os.path.abspath(a.gray)
    systems = [
        ("stock Ray (proxier)", lambda: StockRay(num_cpus=a.cpus), lambda h: "ray://127.0.0.1:%d" % h.client_port),
        ("gray default", lambda: NativePool(gray, num_cpus=a.cpus), lambda h: "ray://127.0.0.1:%d" % h.port),
        ("gray --ray-client-sessions=native", lambda: NativePool(gray, num_cpus=a.cpus, extra=("--ray-client-sessions=native",)),
         lambda h: "ray://127.0.0.1:%d" % h.port),
    ]
    results = {}
    for name, make, addr in systems:
        print(name, flush=True)
        h = make()
        try:
            results[name] = {r["name"]: r for r in measure(addr(h), a.rounds, a.filter)}
        finally:
            h.stop()
    names = [n for n, _, _ in systems]
    stock = results[names[0]]
    lines = ["| metric | " + " | ".join(names) + " | gray default / stock | native sessions / stock |",
             "|---|" + "---|" * (len(names) + 2)]

    def ratio(r, s):
        if "mean" not in r or "mean" not in s or not r["mean"] or not s["mean"]:
            return "n/a"
        x = s["mean"] / r["mean"] if r.get("lower_is_better") else r["mean"] / s["mean"]
        return "%.2fx" % x

    for metric in stock:
        row = [results[n].get(metric, {}) for n in names]
        cells = ["%.2f" % r["mean"] if "mean" in r else r.get("error", "missing") for r in row]
        lines.append("| %s | %s | %s | %s |" % (metric, " | ".join(cells), ratio(row[1], row[0]), ratio(row[2], row[0])))
    table = "\n".join(lines)
    print(table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
