"""A stock ray:// driver connected while the head is killed -9 and
restarted (same ports and state) goes on within its reconnect grace
period: its session comes back (same job id, namespace, runtime_env), the
remote function and actor class it uploaded (and its working_dir) before the restart run again,
its detached actor on a provider keeps its state; what only the old head
held is Ray's error: its put object raises ObjectLostError, its
non-detached actor ActorDiedError. With the default bbolt store and with
Redis."""

from conftest import Provider, wait_for
from restart_harness import run_across_restart
from test_head_failover import FailoverHead
from test_head_restart import redis_url, values  # noqa: F401 (redis_url is a fixture)

DRIVER = """
import os, sys, time
import ray
from ray.exceptions import ObjectLostError, RayActorError

ray.init(CLIENT, namespace="resume", runtime_env={"env_vars": {"RESUME_VAR": "kept"}, "working_dir": WD})
ctx = ray.get_runtime_context()
print("job=" + ctx.get_job_id(), flush=True)

@ray.remote(num_cpus=0)
def f(x):
    import resume_mod
    return x * 2, os.environ.get("RESUME_VAR") + "/" + resume_mod.TOKEN

@ray.remote(num_cpus=0)
class Counter:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n

print("task=%d" % ray.get(f.remote(1))[0], flush=True)
det = Counter.options(name="det", lifetime="detached", resources={"ftnode": 1}).remote()
ray.get(det.incr.remote())
print("det=%d" % ray.get(det.incr.remote()), flush=True)
plain = Counter.options(resources={"ftnode": 1}).remote()
print("plain=%d" % ray.get(plain.incr.remote()), flush=True)
obj = ray.put("before the restart")
print("READY", flush=True)

while not os.path.exists(SIGNAL):  # the test has killed the head
    time.sleep(0.05)

# The head is down or coming back: this call waits for the reconnect.
value, env = ray.get(f.remote(2), timeout=120)
print("first_call_at=%f" % time.time(), flush=True)
print("task_after=%d" % value)
print("env_after=%s" % env)
print("job_after=" + ray.get_runtime_context().get_job_id())
print("namespace_after=" + ray.get_runtime_context().namespace)
print("det_after=%d" % ray.get(det.incr.remote(), timeout=120))
print("det_by_name=%d" % ray.get(ray.get_actor("det").incr.remote(), timeout=120))
try:
    ray.get(obj, timeout=60)
    print("obj_after=value")
except ObjectLostError as e:
    print("obj_after=" + type(e).__name__)
try:
    ray.get(plain.incr.remote(), timeout=60)
    print("plain_after=answered")
except RayActorError as e:
    print("plain_after=" + type(e).__name__)

# Functions and classes defined after the restart run too.
@ray.remote(num_cpus=0)
def g():
    return "new"

print("new_task=" + ray.get(g.remote(), timeout=120))
fresh = Counter.options(resources={"ftnode": 1}).remote()
print("new_actor=%d" % ray.get(fresh.incr.remote(), timeout=120))
ray.kill(det)
"""


def check_resume(head, tmp_path, capsys):
    head.start()
    prov = Provider(head.cmd[0], head, num_cpus=2, extra=["--resources", '{"ftnode": 2}'])
    signal = str(tmp_path / "signal")
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "resume_mod.py").write_text('TOKEN = "from-working-dir"\n')
    driver = head.client("SIGNAL = %r\nWD = %r\n" % (signal, str(wd)) + DRIVER)
    try:
        printed, out, killed = run_across_restart(head, driver, lambda: open(signal, "w").close())
        before = values(printed)
        assert before["task"] == "2" and before["det"] == "2" and before["plain"] == "1", before
        after = values(out)
        pause = float(after.pop("first_call_at")) - killed
        assert after == {
            "task_after": "4", "env_after": "kept/from-working-dir", "job_after": before["job"], "namespace_after": "resume",
            "det_after": "3", "det_by_name": "4", "obj_after": "ObjectLostError",
            "plain_after": "ActorDiedError", "new_task": "new", "new_actor": "1",
        }, (after, head.logs()[-4000:])
        with capsys.disabled():
            print("\n[%s] kill -9 -> connected driver's first call done %.2fs" % (head.storage, pause))
    finally:
        prov.stop()


def test_connected_driver_resumes_after_restart_bolt(gray_bin, tmp_path, capsys):
    head = FailoverHead(gray_bin)
    try:
        check_resume(head, tmp_path, capsys)
    finally:
        head.stop()


def test_connected_driver_resumes_after_restart_redis(gray_bin, tmp_path, capsys, redis_url):  # noqa: F811
    head = FailoverHead(gray_bin, storage=redis_url)
    try:
        check_resume(head, tmp_path, capsys)
    finally:
        head.stop()


def test_session_record_removed_when_driver_exits(gray_bin, tmp_path):
    """A driver that disconnects cleanly leaves no session behind: after a
    restart nothing waits for it."""
    head = FailoverHead(gray_bin)
    try:
        head.start()
        head.run("""
import ray
ray.init(CLIENT)
@ray.remote
def f():
    return 1
assert ray.get(f.remote()) == 1
""")
        wait_for(lambda: "session ended; its record is deleted" in head.logs(), timeout=60, every=0.05)
        head.kill9()
        head.start()
        assert "driver sessions wait for their clients" not in head.logs(), head.logs()[-3000:]
    finally:
        head.stop()
