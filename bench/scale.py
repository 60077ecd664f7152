"""Control-plane scale benchmark: one gray head against thousands of
simulated provider raylets (cmd/graysim, package bench/simraylet).

Build first (bin/ is gitignored), then run with the venv that has
ray[client]==2.60.0:

    CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" go build -o bin/gray ./cmd/gray
    go build -o bin/graysim ./cmd/graysim
    .venv/bin/python bench/scale.py --gray bin/gray --graysim bin/graysim [--sizes 0,100,500,1000,2000]

For each size N it starts a head with no CPUs of its own (all work goes to
the simulated nodes), starts graysim with N nodes, waits until all have
registered, then measures the head process: CPU (utime+stime from
/proc/PID/stat) over an idle window and RSS (VmRSS); then a Ray Client
workload (a batch of tiny tasks submitted at once and fetched with one
ray.get, and sequential task round trips for latency) with the head's CPU
during it. Everything it started is killed at the end, and on failure.
Writes a markdown table to --out (default bench/results/<date>-scale-<machine>.md).
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
WARMUP = 50  # tasks the workload runs before it measures
PAGE = os.sysconf("SC_PAGE_SIZE")

# The Ray Client workload, run in its own process per size so that every
# head gets a fresh client. It prints START before the measured part and one
# JSON line after it.
WORKLOAD = r"""
import json, sys, time
import ray

tasks, rounds, WARMUP = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ray.init(sys.argv[1], logging_level="ERROR")

@ray.remote(num_cpus=1)
def f():
    return None

ray.get([f.remote() for _ in range(WARMUP)])  # warm up: function export, client paths
print("START", flush=True)
t0 = time.perf_counter()
refs = [f.remote() for _ in range(tasks)]
submitted = time.perf_counter() - t0
out = ray.get(refs)
batch = time.perf_counter() - t0
assert all(x is None for x in out), out[:5]
lat = []
for _ in range(rounds):
    t = time.perf_counter()
    ray.get(f.remote())
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(round(p * (len(lat) - 1))))]
print(json.dumps({"tasks": tasks, "batch_s": batch, "submit_s": submitted, "tasks_per_s": tasks / batch,
                  "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": lat[-1]}), flush=True)
ray.shutdown()
"""


def log(msg):
    print("[scale %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        log("raised open-file soft limit %d -> %d (hard %s)" % (soft, target, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        log("WARNING: open-file limit %d is below the %d the largest size wants" % (soft, want))


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def udp_drops(pid):
    """Datagrams the kernel dropped on pid's UDP sockets (full receive
    buffers), from the drops column of /proc/net/udp{,6}."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    total = 0
    for path in ("/proc/net/udp", "/proc/net/udp6"):
        with open(path) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[9] in inodes:
                    total += int(cols[12])
    return total


def threads(pid):
    return status_kib(pid, "Threads")


class CPUWindow:
    """CPU of one process over a wall-clock window, as % of one core."""

    def __init__(self, pid):
        self.pid, self.t, self.ticks = pid, time.monotonic(), cpu_ticks(pid)

    def percent(self):
        dt = time.monotonic() - self.t
        return 100.0 * (cpu_ticks(self.pid) - self.ticks) / CLK_TCK / dt


class Proc:
    """A child in its own session (so the whole group can be killed) whose
    stdout lines are collected by a thread."""

    live = []

    def __init__(self, name, cmd, log_dir, env=None):
        self.name, self.cmd = name, cmd
        self.err = open(os.path.join(log_dir, name + ".stderr"), "w")
        self.out = open(os.path.join(log_dir, name + ".stdout"), "w", buffering=1)
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err, stdin=subprocess.DEVNULL,
                                  text=True, bufsize=1, start_new_session=True, env=env)
        self.lines, self.cond = [], threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        Proc.live.append(self)

    def _read(self):
        for line in self.p.stdout:
            self.out.write("%s %s" % (time.strftime("%H:%M:%S"), line))
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, pred, timeout):
        """The first stdout line matching pred, waiting up to timeout."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self.cond:
            while True:
                for line in self.lines[seen:]:
                    if pred(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and seen == len(self.lines)):
                    raise RuntimeError("%s: no expected line (waited up to %.0fs; exit status %s); last lines: %s; stderr in %s"
                                       % (self.name, timeout, self.p.poll(), self.lines[-5:], self.err.name))
                self.cond.wait(min(left, 1.0))

    def last(self, prefix):
        with self.cond:
            for line in reversed(self.lines):
                if line.startswith(prefix):
                    return line
        return ""

    def stop(self, timeout=30):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log("%s did not stop in %ds; killing" % (self.name, timeout))
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.p.pid, signal.SIGKILL)  # stragglers in its group
        except ProcessLookupError:
            pass
        self.p.wait()
        self.err.close()
        self.out.close()
        if self in Proc.live:
            Proc.live.remove(self)

    @classmethod
    def stop_all(cls):
        for p in list(reversed(cls.live)):
            p.stop(timeout=10)


def head_status(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/api/gray/status" % port, timeout=30) as r:
        return json.load(r)


def node_states(port):
    counts = {}
    for n in head_status(port)["nodes"]:
        counts[n["state"]] = counts.get(n["state"], 0) + 1
    return counts


def run_size(args, n, workdir):
    row = {"n": n}
    log_dir = os.path.join(workdir, "n%d" % n)
    os.makedirs(log_dir)
    port, status_port = free_port(), free_port()
    head_cmd = [args.gray, "start", "--head", "--num-cpus", "0", "--port", str(port), "--status-port", str(status_port),
                "--node-port", "0", "--gcs-port", "-1", "--state-dir", os.path.join(log_dir, "state"), "--python", args.python,
                "--prestart-workers", "0", "--dead-after", args.dead_after]
    # A private TMPDIR keeps the head's pid file (and session dir) apart:
    # `gray stop` run by anyone on this machine stops every head recorded in
    # $TMPDIR/gray/gray.pid.
    env = dict(os.environ, TMPDIR=os.path.join(log_dir, "tmp"))
    os.makedirs(env["TMPDIR"])
    if args.gctrace:
        env["GODEBUG"] = "gctrace=1"
    log("N=%d: starting head (client port %d)" % (n, port))
    head = Proc("head", head_cmd, log_dir, env=env)
    line = head.wait_line(lambda l: "Providers:" in l, 60)
    parts = dict(a.split("=", 1) for a in line.split() if a.startswith("--"))
    addr, token = parts["--address"], parts["--token"]
    base = CPUWindow(head.p.pid)
    sim = None
    if n > 0:
        sim_cmd = [args.graysim, "--address", addr, "--token", token, "--n", str(n), "--cpus", str(args.sim_cpus),
                   "--heartbeat", args.heartbeat]
        log("N=%d: starting graysim" % n)
        sim = Proc("graysim", sim_cmd, log_dir)
        t0 = time.monotonic()
        sim.wait_line(lambda l: l.startswith("registered"), 120 + n * 0.25)
        row["register_s"] = time.monotonic() - t0
        row["register_cpu"] = base.percent()
        log("N=%d: all registered in %.1fs (head CPU during joins %.0f%%)" % (n, row["register_s"], row["register_cpu"]))
    states = node_states(status_port)
    row["states_idle"] = states
    log("N=%d: head lists nodes %s" % (n, states))
    if states.get("ALIVE", 0) != n + 1:
        log("N=%d: WARNING: want %d alive nodes" % (n, n + 1))

    head_node = next(x for x in head_status(status_port)["nodes"] if x["head"])
    if head_node["total"].get("CPU", 0) != 0:
        log("N=%d: WARNING: the head offers %s CPUs; tasks will run there too" % (n, head_node["total"].get("CPU")))

    time.sleep(args.settle)
    log("N=%d: idle window %.0fs" % (n, args.idle))
    win, drops = CPUWindow(head.p.pid), udp_drops(head.p.pid)
    simwin = CPUWindow(sim.p.pid) if sim else None
    sim_drops = udp_drops(sim.p.pid) if sim else 0
    time.sleep(args.idle)
    row["idle_cpu"] = win.percent()
    row["idle_sim_cpu"] = simwin.percent() if simwin else None
    row["idle_head_udp_drops"] = udp_drops(head.p.pid) - drops
    row["idle_sim_udp_drops"] = udp_drops(sim.p.pid) - sim_drops if sim else None
    row["rss_kib"] = status_kib(head.p.pid, "VmRSS")
    row["threads"] = threads(head.p.pid)
    log("N=%d: idle head CPU %.1f%%, RSS %.1f MiB, %d threads"
        % (n, row["idle_cpu"], row["rss_kib"] / 1024, row["threads"]))

    if n > 0 and args.tasks > 0:
        log("N=%d: Ray Client workload (%d tasks, %d round trips)" % (n, args.tasks, args.rounds))
        wl = Proc("workload", [args.python, "-c", WORKLOAD, "ray://127.0.0.1:%d" % port, str(args.tasks),
                               str(args.rounds), str(WARMUP)], log_dir)
        try:
            wl.wait_line(lambda l: l == "START", 120)
            win, simwin = CPUWindow(head.p.pid), CPUWindow(sim.p.pid)
            drops, sim_drops = udp_drops(head.p.pid), udp_drops(sim.p.pid)
            res = json.loads(wl.wait_line(lambda l: l.startswith("{"), args.workload_timeout))
        except RuntimeError:
            log("N=%d: workload failed; head %s, graysim %s; last graysim stats: %s"
                % (n, "exited with %s" % head.p.poll() if head.p.poll() is not None else "running",
                   "exited with %s" % sim.p.poll() if sim.p.poll() is not None else "running", sim.last("stats")))
            raise
        row["load_cpu"] = win.percent()
        row["load_sim_cpu"] = simwin.percent()
        row["load_head_udp_drops"] = udp_drops(head.p.pid) - drops
        row["load_sim_udp_drops"] = udp_drops(sim.p.pid) - sim_drops
        row.update(res)
        try:
            wl.p.wait(timeout=30)  # it shuts its client down and exits
        except subprocess.TimeoutExpired:
            log("N=%d: workload did not exit in 30s after its results" % n)
        wl.stop()
        row["rss_after_kib"] = status_kib(head.p.pid, "VmRSS")
        row["hwm_kib"] = status_kib(head.p.pid, "VmHWM")
        row["states_after"] = node_states(status_port)
        log("N=%d: %.0f tasks/s (batch %.2fs), p50 %.2f ms, p99 %.2f ms, head CPU %.0f%%, RSS after %.1f MiB, nodes %s"
            % (n, res["tasks_per_s"], res["batch_s"], res["p50_ms"], res["p99_ms"], row["load_cpu"],
               row["rss_after_kib"] / 1024, row["states_after"]))
    if sim:
        sim.stop()
        row["sim_stats"] = sim.last("stopped")
        submits = dict(kv.split("=", 1) for kv in row["sim_stats"].split()[1:] if "=" in kv).get("submits")
        want = WARMUP + args.tasks + args.rounds if args.tasks > 0 else 0
        if submits is not None and int(submits) != want:
            log("N=%d: WARNING: the simulated nodes ran %s tasks, the client submitted %d" % (n, submits, want))
    head.stop()
    with open(os.path.join(log_dir, "head.stderr")) as f:
        warns = [l for l in f if "level=WARN" in l or "level=ERROR" in l]
    # Disconnect warnings at shutdown are expected; count the rest.
    warns = [l for l in warns if "provider disconnected" not in l and "state=SUSPECT" not in l]
    row["head_warnings"] = len(warns)
    if warns:
        log("N=%d: head logged %d warnings/errors, e.g. %s" % (n, len(warns), warns[0].strip()[:300]))
    return row


def source_tree():
    """The checkout's commit (and whether tracked files differ from it)."""
    try:
        return subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fmt(v, spec="%.1f"):
    return "—" if v is None else spec % v


def table(rows):
    base = next((r for r in rows if r["n"] == 0), None)
    out = ["| N | head RSS MiB | RSS per node KiB | idle head CPU % | idle graysim CPU % | join s | tasks/s | p50 ms | p99 ms "
           "| head CPU % under load | head RSS after load MiB | head UDP drops idle / load | nodes not alive after load |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = (r["rss_kib"] - base["rss_kib"]) / r["n"] if base and r["n"] else None
        after = r.get("states_after")
        out.append("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s | %s |" % (
            r["n"], fmt(r["rss_kib"] / 1024), fmt(per, "%.0f"), fmt(r["idle_cpu"]), fmt(r.get("idle_sim_cpu"), "%.0f"),
            fmt(r.get("register_s")), fmt(r.get("tasks_per_s"), "%.0f"), fmt(r.get("p50_ms"), "%.2f"),
            fmt(r.get("p99_ms"), "%.2f"), fmt(r.get("load_cpu"), "%.0f"),
            fmt(r["rss_after_kib"] / 1024 if "rss_after_kib" in r else None),
            fmt(r.get("idle_head_udp_drops"), "%d"), fmt(r.get("load_head_udp_drops"), "%d"),
            "—" if after is None else sum(v for k, v in after.items() if k != "ALIVE")))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gray", default=os.path.join(ROOT, "bin", "gray"))
    ap.add_argument("--graysim", default=os.path.join(ROOT, "bin", "graysim"))
    ap.add_argument("--python", default=sys.executable, help="worker/client Python with ray[client]==2.60.0")
    ap.add_argument("--sizes", default="0,100,500,1000,2000", help="comma-separated node counts")
    ap.add_argument("--sim-cpus", type=float, default=1, help="CPUs each simulated node offers")
    ap.add_argument("--heartbeat", default="1s")
    ap.add_argument("--dead-after", default="120s")
    ap.add_argument("--settle", type=float, default=5, help="seconds after registration before the idle window")
    ap.add_argument("--idle", type=float, default=10, help="idle window seconds")
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--workload-timeout", type=float, default=600)
    ap.add_argument("--gctrace", action="store_true", help="run the head with GODEBUG=gctrace=1 (in its stderr log)")
    ap.add_argument("--machine", default="vm")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    for path in (args.gray, args.graysim):
        if not os.access(path, os.X_OK):
            sys.exit("%s is not built; see the build commands in %s" % (path, __file__))
    args.gray, args.graysim = os.path.abspath(args.gray), os.path.abspath(args.graysim)
    built = {k: os.path.relpath(v, ROOT) if v.startswith(ROOT + os.sep) else v
             for k, v in (("gray", args.gray), ("graysim", args.graysim))}
    raise_nofile(4 * max(sizes + [0]) + 1024)
    out = args.out or os.path.join(HERE, "results", "%s-scale-%s.md" % (datetime.date.today().isoformat(), args.machine))

    def on_signal(signum, _):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    rows = []
    tree = source_tree()  # now, before anyone commits during the run
    workdir = tempfile.mkdtemp(prefix="gray-scale-")
    log("sizes %s; logs under %s" % (sizes, workdir))
    # Run private copies: bin/ may be rebuilt by someone else mid-run.
    digests = {}
    for attr in ("gray", "graysim"):
        src = getattr(args, attr)
        dst = os.path.join(workdir, os.path.basename(src))
        shutil.copy2(src, dst)
        with open(dst, "rb") as f:
            digests[os.path.basename(src)] = hashlib.sha256(f.read()).hexdigest()[:12]
        setattr(args, attr, dst)
    log("binaries (sha256): %s" % digests)
    try:
        for n in sizes:
            rows.append(run_size(args, n, workdir))
    finally:
        Proc.stop_all()
    print(table(rows))
    py = os.path.relpath(args.python, ROOT) if args.python.startswith(ROOT) else args.python
    cmd = " ".join(shlex.quote(a) for a in [py, "bench/scale.py"] + sys.argv[1:])
    with open(out, "w") as f:
        f.write("# gray control-plane scale: one head, N simulated providers (%s, %s)\n\n" % (datetime.date.today(), args.machine))
        f.write("Command (from the repository root, after the builds below):\n\n```\n")
        f.write('CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" go build -o %s ./cmd/gray\n' % built["gray"])
        f.write("go build -o %s ./cmd/graysim\n%s\n```\n\n" % (built["graysim"], cmd))
        f.write("Machine: %s, %d CPUs, %s; head, graysim and the client on the same machine. Source tree: %s. "
                "Binaries (sha256 prefix): %s.\n" % (
                    platform.platform(), os.cpu_count(), "%.0f GiB RAM" % (os.sysconf("SC_PHYS_PAGES") * PAGE / 2**30),
                    tree, ", ".join("%s %s" % kv for kv in sorted(digests.items()))))
        f.write("Head: `gray start --head --num-cpus 0 --prestart-workers 0 --dead-after %s` (all work goes to the "
                "simulated nodes). Each simulated node: %g CPU, heartbeat %s, its own P-256 key, certificate and "
                "QUIC connection; it answers every task by pushing None.\n\n" % (args.dead_after, args.sim_cpus, args.heartbeat))
        f.write("RSS per node = (head RSS at N − head RSS at N=0) / N, sampled after a %gs idle window. Idle CPU is the head "
                "process's utime+stime over that window as %% of one core. Workload: %d `f.remote()` of an empty task "
                "submitted at once, then one `ray.get` of all (tasks/s), then %d sequential `ray.get(f.remote())` "
                "(p50/p99). Join s = from graysim start to all nodes registered.\n\n" % (args.idle, args.tasks, args.rounds))
        f.write(table(rows) + "\n\n")
        f.write("Details per size (JSON):\n\n```\n")
        for r in rows:
            f.write(json.dumps(r, sort_keys=True) + "\n")
        f.write("```\n")
        sys.path.insert(0, HERE)
        import charts

        xs = [r["n"] for r in rows]
        stem = os.path.splitext(out)[0]
        for key, ylabel, name, scale in (("tasks_per_s", "tasks per second", "throughput", 1),
                                         ("rss_kib", "head RSS (MiB)", "memory", 1 / 1024),
                                         ("idle_cpu", "head CPU idle (% of a core)", "idle-cpu", 1)):
            png = "%s-%s.png" % (stem, name)
            ys = [r[key] * scale if r.get(key) is not None else None for r in rows]
            if charts.lines(png, "head %s vs simulated providers" % name, "providers", ylabel, xs, {"gray head": ys}):
                f.write("\n![%s](%s)\n" % (name, os.path.basename(png)))
    log("wrote %s" % out)


if __name__ == "__main__":
    main()
