"""WAN benchmark: object throughput and task latency between a gray head and
providers joined over emulated WAN links (graywan: userspace UDP/TCP link
emulators, see internal/wanharness), against a provider joined directly.

    .venv/bin/python bench/wan.py --gray-bin bin/gray --graywan-bin bin/graywan \\
        [--size-mib 64] [--tasks 50] [--max-transfer-s 900] [--out bench/results/2026-11-23-wan-vm.md]

One head (region r0) and one provider per link, each provider in its own
region and joined through its own link (QUIC through the link's UDP proxy,
its workers' Ray Client connection through its TCP proxy); the driver talks
to the head directly. For each link, in turn:

  latency   50 sequential no-op tasks pinned to the region (label selector):
            p50/p99 of the round trip, against the link RTT;
  head→provider  a task pinned to the region receiving a fresh ray.put
            argument of --size-mib and returning its length; throughput =
            size / (time − no-op p50);
  provider→head  a task pinned to the region returning --size-mib of
            incompressible bytes, timed through ray.get; same correction.

Throughput is also given as a fraction of the configured link bandwidth, and
next to the Mathis et al. bound for one loss-based (Reno) flow,
MSS/RTT · 1.22/√p, with MSS the mean datagram size the link carried. The
link counters (datagrams dropped for loss or by the bottleneck queue) come
from graywan's /stats.

If a transfer of --size-mib would take longer than --max-transfer-s (judged
from an 8 MiB probe), the size is reduced to the largest power of two MiB
that fits, and the table says so.
"""

import argparse
import datetime
import math
import os
import platform
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from conftest import Pool, Provider, WanLinks  # noqa: E402

REGION = "ray.io/availability-region"
MIB = 1 << 20
# Everything from this line on in an existing report is kept when it is
# rewritten: put hand-written analysis after it.
NOTES = "<!-- notes: kept when bench/wan.py rewrites this file -->"

# name, RTT, loss, bandwidth; None: joined directly, no emulator.
LINKS = [
    ("direct", None, None, None),
    ("w20", "20ms", 0.01, "100mbit"),
    ("w80", "80ms", 0.01, "100mbit"),
    ("w80-noloss", "80ms", 0.0, "100mbit"),
    ("w150", "150ms", 0.01, "100mbit"),
]


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]


def parse_duration_s(s):
    return float(s[:-2]) / 1000 if s.endswith("ms") else float(s.rstrip("s"))


def udp_delta(before, after, direction):
    a, b = before["udp"][direction], after["udp"][direction]
    return {k: b[k] - a[k] for k in b}


class Bench:
    def __init__(self, ray, links, args):
        self.ray, self.links, self.args = ray, links, args

        @ray.remote
        def noop():
            return 0

        @ray.remote
        def length(blob):
            return len(blob)

        @ray.remote
        def produce(n):
            block = os.urandom(1 << 20)
            return (block * (n // len(block) + 1))[:n]

        self.noop, self.length, self.produce = noop, length, produce

    def pinned(self, fn, region):
        return fn.options(label_selector={REGION: region})

    def stats(self, name):
        return self.links.stats(name)[name] if self.links and name != "direct" else None

    def latency(self, region):
        f = self.pinned(self.noop, region)
        for _ in range(3):  # warm: worker up, connection's RTT estimate settled
            self.ray.get(f.remote(), timeout=120)
        times = []
        for _ in range(self.args.tasks):
            t = time.perf_counter()
            self.ray.get(f.remote(), timeout=120)
            times.append(time.perf_counter() - t)
        return percentile(times, 50), percentile(times, 99)

    def down(self, region, size, base):
        """head→provider: seconds for a pinned task to receive size bytes."""
        ref = self.ray.put(os.urandom(MIB) * (size // MIB))
        t = time.perf_counter()
        n = self.ray.get(self.pinned(self.length, region).remote(ref), timeout=self.args.max_transfer_s * 2 + 60)
        dt = time.perf_counter() - t
        assert n == size, (n, size)
        del ref
        return max(dt - base, 1e-6)

    def up(self, region, size, base):
        """provider→head: seconds for a pinned task's size-byte result to
        come back through ray.get."""
        t = time.perf_counter()
        value = self.ray.get(self.pinned(self.produce, region).remote(size), timeout=self.args.max_transfer_s * 2 + 60)
        dt = time.perf_counter() - t
        assert len(value) == size
        return max(dt - base, 1e-6)

    def transfer(self, name, region, what, fn, base):
        """Runs fn at --size-mib (or less, see the module doc); returns a
        result row."""
        size = self.args.size_mib * MIB
        note = ""
        if name != "direct":
            probe = 8 * MIB
            dt = fn(region, probe, base)
            rate = probe / dt
            log("  %s %s probe: 8 MiB in %.1fs (%.2f MiB/s)" % (name, what, dt, rate / MIB))
            if size / rate > self.args.max_transfer_s:
                fit = 8
                while fit * 2 * MIB / rate <= self.args.max_transfer_s and fit * 2 <= self.args.size_mib:
                    fit *= 2
                note = "%d MiB would take ~%.0fs" % (self.args.size_mib, size / rate)
                size = fit * MIB
        log("  %s %s: %d MiB ..." % (name, what, size // MIB))
        s0 = self.stats(name)
        dt = fn(region, size, base)
        s1 = self.stats(name)
        row = {"size": size, "seconds": dt, "mibps": size / dt / MIB, "note": note}
        if s0:
            d = udp_delta(s0, s1, "down" if what == "head→provider" else "up")
            back = udp_delta(s0, s1, "up" if what == "head→provider" else "down")
            row.update(
                datagrams=d["received"], wire_bytes=d["received_bytes"], drop_loss=d["dropped_loss"],
                drop_queue=d["dropped_queue"], acks=back["received"],
                mss=d["received_bytes"] / max(d["received"], 1),
            )
        log("  %s %s: %d MiB in %.1fs = %.2f MiB/s%s" % (
            name, what, size // MIB, dt, row["mibps"],
            "" if not s0 else ", %d datagrams, %d lost, %d queue drops" % (
                row["datagrams"], row["drop_loss"], row["drop_queue"])))
        return row


def mathis_mibps(mss, rtt_s, loss):
    if not loss or not rtt_s:
        return None
    return mss / rtt_s * 1.22 / math.sqrt(loss) / MIB


def loss_str(loss):
    return "–" if loss is None else "%g%%" % (loss * 100)


def fmt(x, spec="%.2f"):
    return "–" if x is None else spec % x


def wan_charts(out, rows):
    """PNG charts next to the report: throughput and latency per link."""
    sys.path.insert(0, HERE)
    import charts

    stem = os.path.splitext(out)[0]
    labels = [r["name"] for r in rows]

    def mibps(r, d):
        t = r.get(d) or {}
        return t.get("mibps")

    charts.bars(stem + "-throughput.png", "64 MiB transfers over emulated links", "MiB/s", labels, {
        "head→provider": [mibps(r, "head→provider") for r in rows],
        "provider→head": [mibps(r, "provider→head") for r in rows]})
    charts.bars(stem + "-latency.png", "task round trip over emulated links", "ms", labels, {
        "link RTT": [(r["rtt_s"] or 0) * 1000 for r in rows],
        "p50": [r["p50"] * 1000 for r in rows], "p99": [r["p99"] * 1000 for r in rows]})
    log("charts: %s-throughput.png, %s-latency.png" % (stem, stem))


def write_report(path, command, rows, started, elapsed):
    bandwidth = next((r["bw"] for r in rows if r["bw_bps"]), "–")
    lines = [
        "# WAN benchmark: head ↔ provider over emulated links",
        "",
        "```",
        command,
        "```",
        "",
        "Machine: %s, %d CPUs, load average at start %s; %s, Python %s. Started %s, took %.0f s." % (
            platform.node(), os.cpu_count(), started["load"], platform.platform(), platform.python_version(),
            started["at"], elapsed),
        "gray: %s (repository HEAD at start); binary %s." % (started["commit"], started["binary"]),
        "",
        "Each emulated link is a graywan UDP proxy (the provider's QUIC connection to the head: control, "
        "object pulls and pushes) and a TCP proxy (its workers' Ray Client connection), each direction "
        "delayed by RTT/2 with the given loss (UDP only, each direction) and bandwidth; no jitter. "
        "`direct`: a provider joined straight to the head on loopback. The driver sits at the head.",
        "",
        "## Task round trip (%d sequential no-op tasks pinned to the region)" % rows[0]["tasks"],
        "",
        "| link | RTT | loss | p50 ms | p99 ms | p50 − RTT ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rtt_ms = r["rtt_s"] * 1000 if r["rtt_s"] is not None else 0
        lines.append("| %s | %s | %s | %.1f | %.1f | %.1f |" % (
            r["name"], r["rtt"] or "–", loss_str(r["loss"]), r["p50"] * 1000, r["p99"] * 1000, r["p50"] * 1000 - rtt_ms))
    lines += [
        "",
        "## Object throughput",
        "",
        "Time of the transfer task minus the no-op p50; bandwidth configured %s each way. "
        "Mathis: MSS/RTT·1.22/√p for one Reno flow, MSS = mean datagram size carried. "
        "Datagrams/lost/queue: the data direction's UDP counters during the transfer." % bandwidth,
        "",
        "| link | direction | size MiB | s | MiB/s | % of bandwidth | Mathis MiB/s | datagrams | lost | queue drops | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for what in ("head→provider", "provider→head"):
            t = r[what]
            pct = None
            if r["bw_bps"]:
                pct = t["mibps"] * MIB * 8 / r["bw_bps"] * 100
            m = mathis_mibps(t.get("mss", 0), r["rtt_s"], r["loss"]) if "mss" in t else None
            lines.append("| %s | %s | %d | %.1f | %.2f | %s | %s | %s | %s | %s | %s |" % (
                r["name"], what, t["size"] // MIB, t["seconds"], t["mibps"], fmt(pct, "%.1f%%"), fmt(m),
                t.get("datagrams", "–"), t.get("drop_loss", "–"), t.get("drop_queue", "–"), t["note"]))
    lines.append("")
    text = "\n".join(lines)
    # Hand-written analysis below NOTES in an earlier report survives a rerun.
    try:
        with open(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    if NOTES in old:
        text += "\n" + old[old.index(NOTES):]
    with open(path, "w") as f:
        f.write(text)


def fingerprint(path):
    """Which binary ran: its sha256 prefix and modification time."""
    import hashlib

    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    return "%s sha256 %s, built %s" % (os.path.relpath(path, ROOT), digest, mtime.strftime("%Y-%m-%d %H:%M UTC"))


def git(*args):
    """Read-only git query (no optional index refresh)."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
    r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, env=env)
    return r.stdout.strip() if r.returncode == 0 else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gray-bin", default=os.path.join(ROOT, "bin", "gray"))
    ap.add_argument("--graywan-bin", default=os.path.join(ROOT, "bin", "graywan"))
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--provider-args", default="", help="extra `gray start` flags for every provider, e.g. '--transfer-conns 33'")
    ap.add_argument("--tasks", type=int, default=50)
    ap.add_argument("--max-transfer-s", type=float, default=900)
    ap.add_argument("--links", default=",".join(n for n, *_ in LINKS), help="comma-separated subset of " +
                    ", ".join(n for n, *_ in LINKS))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "%s-wan-vm.md" % datetime.date.today().isoformat()))
    args = ap.parse_args()
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.executable, ROOT), os.path.relpath(__file__, ROOT)] + sys.argv[1:])
    chosen = [l for l in LINKS if l[0] in args.links.split(",")]
    t_start = time.time()
    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += " with uncommitted changes"
    started = {"at": datetime.datetime.now().isoformat(timespec="seconds"), "load": open("/proc/loadavg").read().split()[0],
               "commit": commit or "unknown", "binary": fingerprint(args.gray_bin)}

    log("starting head")
    head = Pool(args.gray_bin, num_cpus=1, extra=["--region", "r0", "--object-store-memory", str(2 << 30)])
    links, providers = None, []
    try:
        emulated = [l for l in chosen if l[1] is not None]
        if emulated:
            specs = ["name=%s,rtt=%s,loss=%g,bandwidth=%s,seed=1" % (n, rtt, loss, bw) for n, rtt, loss, bw in emulated]
            links = WanLinks(args.graywan_bin, head, specs)
            log("graywan up: %s" % ", ".join("%s udp %s tcp %s" % (n, l["udp"], l["tcp"]) for n, l in links.links.items()))
        for name, rtt, *_ in chosen:
            kw = links.provider_args(name) if rtt is not None else {}
            extra = kw.pop("extra", []) + ["--object-store-memory", str(1 << 30)] + shlex.split(args.provider_args)
            log("joining provider %s%s" % (name, "" if rtt is None else " through its link"))
            providers.append(Provider(args.gray_bin, head, num_cpus=1, region=name, extra=extra, **kw))

        import ray

        ray.init("ray://" + head.address, logging_level="WARNING")
        bench = Bench(ray, links, args)
        rows = []
        for name, rtt, loss, bw in chosen:
            log("%s: %d no-op tasks" % (name, args.tasks))
            p50, p99 = bench.latency(name)
            log("  %s: p50 %.1f ms, p99 %.1f ms" % (name, p50 * 1000, p99 * 1000))
            row = {
                "name": name, "rtt": rtt, "rtt_s": parse_duration_s(rtt) if rtt else None, "loss": loss, "bw": bw or "–",
                "bw_bps": None, "p50": p50, "p99": p99, "tasks": args.tasks,
            }
            if bw:
                row["bw_bps"] = float(bw.replace("mbit", "")) * 1e6
            row["head→provider"] = bench.transfer(name, name, "head→provider", bench.down, p50)
            row["provider→head"] = bench.transfer(name, name, "provider→head", bench.up, p50)
            rows.append(row)
            write_report(args.out, command, rows, started, time.time() - t_start)  # partial results survive a crash
        ray.shutdown()
        if links:
            log("link totals: %s" % links.stats())
        write_report(args.out, command, rows, started, time.time() - t_start)
        log("wrote %s" % args.out)
        wan_charts(args.out, rows)
    finally:
        for p in providers:
            p.stop()
        if links:
            links.stop()
        head.stop()


if __name__ == "__main__":
    main()
