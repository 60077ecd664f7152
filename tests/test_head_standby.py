"""A standby head on Redis: head B started on head A's Redis (and a copy of
A's state directory, hence the same pool CA and join secret) waits as a
standby while A holds the GCS lease, serving no tables: its Ray Client
port forwards to A (so a driver given B's address reaches A now and
follows the failover to B, resuming its session). A provider names
both heads. kill -9 of A: B takes the lease when it expires, loads the
tables as a restarted head does and serves; the provider reconnects to it,
and a new ray:// client to B finds the detached actor by name with its
in-memory state. The actor's own calls back to the head (its worker
reaches the Ray Client port through the provider's tunnel, which follows
the active head) work after the failover too; the first of them may fail
once with a connection error while the worker's gRPC channel, broken by
the outage, reconnects (measured: one failed attempt, then it works)."""

import os
import shutil
import socket
import time

from conftest import Provider, wait_for
from test_head_failover import FailoverHead
from test_head_restart import redis_url  # noqa: F401 (a fixture)

BEFORE = """
import ray
ray.init(CLIENT)

@ray.remote(resources={"sbnode": 1})
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n
    def node(self):
        return ray.get_runtime_context().get_node_id()

c = Counter.options(name="ctr", namespace="sb", lifetime="detached", max_restarts=0).remote()
for _ in range(3):
    n = ray.get(c.incr.remote())
print("count=%d" % n)
print("actor_node=" + ray.get(c.node.remote()))
"""

AFTER = """
import ray
ray.init(CLIENT)
c = ray.get_actor("ctr", namespace="sb")
print("count=%d" % ray.get(c.incr.remote()))
import time
for attempt in range(40):
    try:
        print("actor_node=" + ray.get(c.node.remote(), timeout=60))
        break
    except Exception as e:
        print("attempt=%d %s" % (attempt, type(e).__name__))
        time.sleep(0.5)
"""


# A driver given the standby's address: the standby forwards its Ray Client
# port to the active head; after the failover the client reconnects to the
# same address and resumes its session on the new head.
FOLLOW = """
import os, time, ray
ray.init(CLIENT)

@ray.remote(resources={"sbnode": 1})
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n

f = Counter.options(name="fol", namespace="sb", lifetime="detached", max_restarts=0).remote()
ray.get(f.incr.remote())
print("before=%d" % ray.get(f.incr.remote()), flush=True)
print("READY", flush=True)
while not os.path.exists(SIGNAL):  # the test has killed head A
    time.sleep(0.05)
print("after=%d" % ray.get(f.incr.remote(), timeout=120), flush=True)
print("first_call_at=%f" % time.time(), flush=True)

@ray.remote(num_cpus=0)
def g():
    return "new"

print("new_task=" + ray.get(g.remote(), timeout=120), flush=True)
ray.kill(f)
"""


def values(out):
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_standby(head):
    """Starts head as a standby; returns once it says so."""
    head.runs += 1
    head.logfile = "%s/head-%d.log" % (head.tmp, head.runs)
    head.log = open(head.logfile, "w")
    import subprocess
    head.proc = subprocess.Popen(head.cmd, stdout=head.log, stderr=subprocess.STDOUT, env=head.env,
                                 start_new_session=True)

    def standby():
        if head.proc.poll() is not None:
            raise AssertionError("standby head exited:\n" + head.logs())
        return "standby head" in head.logs()

    wait_for(standby, timeout=60, every=0.05)


def test_standby_head_takes_over(gray_bin, capsys, redis_url):  # noqa: F811
    a = FailoverHead(gray_bin, storage=redis_url)
    b = FailoverHead(gray_bin, storage=redis_url)
    prov = follower = None
    try:
        a.start()
        shutil.rmtree(b.state_dir, ignore_errors=True)
        shutil.copytree(a.state_dir, b.state_dir)  # the pool CA and join secret
        start_standby(b)
        b.node_address = "127.0.0.1:%d" % b.node_port
        b.native_address = ""  # this test drives B over ray:// only
        # The standby serves no tables; its Ray Client port forwards to A.
        assert "GCS tables:" not in b.logs()
        wait_for(lambda: listening(b.port), timeout=30, every=0.05)

        prov = Provider(gray_bin, a, num_cpus=2, address="%s,%s" % (a.node_address, b.node_address),
                        extra=["--resources", '{"sbnode": 2}'])
        before = values(a.run(BEFORE))
        assert before["count"] == "3", before
        assert before["actor_node"].startswith(prov.node_prefix), (before, prov.node_prefix)
        assert "standby head" in b.logs() and "GCS tables:" not in b.logs()

        signal = os.path.join(b.tmp, "follow-signal")
        follower = b.client("SIGNAL = %r\n" % signal + FOLLOW)
        seen = []
        for line in follower.stdout:
            if line.strip() == "READY":
                break
            seen.append(line)
        else:
            follower.wait()
            raise AssertionError("follower exited (%s):\n%s\n--- A ---\n%s" % (
                follower.returncode, "".join(seen), a.logs()[-4000:]))
        assert values("".join(seen))["before"] == "2", seen
        assert "standby head" in b.logs() and "GCS tables:" not in b.logs()  # A served it, through B

        t0 = time.monotonic()
        killed = time.time()
        a.kill9()
        open(signal, "w").close()

        def serving():
            if b.proc.poll() is not None:
                raise AssertionError("standby head exited:\n" + b.logs())
            return "GCS tables:" in b.logs()

        wait_for(serving, timeout=60, every=0.05)
        up = time.monotonic() - t0
        wait_for(lambda: "provider reconnected after a head restart" in b.logs(), timeout=90, every=0.05)
        reconnected = time.monotonic() - t0
        after = values(b.run(AFTER))
        called = time.monotonic() - t0
        assert after["count"] == "4", (after, b.logs()[-4000:])
        assert after["actor_node"] == before["actor_node"], (before, after)
        retried = after.get("attempt", "none")
        out, _ = follower.communicate(timeout=180)
        assert follower.returncode == 0, "follower failed (%d):\n%s\n--- B ---\n%s" % (
            follower.returncode, out, b.logs()[-6000:])
        followed = values(out)
        followed_at = float(followed.pop("first_call_at")) - killed
        assert (followed.get("after"), followed.get("new_task")) == ("3", "new"), followed
        with capsys.disabled():
            print("\n[standby] kill -9 of A -> B serving %.2fs; -> provider reconnected to B %.2fs; "
                  "-> first actor call done (new client to B) %.2fs; the actor's own call retried: %s; "
                  "a driver connected through B's port went on after %.2fs"
                  % (up, reconnected, called, retried, followed_at))
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        if prov is not None:
            prov.stop()
        b.stop()
        a.stop()
