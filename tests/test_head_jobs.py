"""A Jobs-API job keeps running across kill -9 of the head: the restarted
head (same ports and state) adopts the running entrypoint, `ray job logs`
has its output from before and after the restart, and its status ends
SUCCEEDED when it exits 0; a job whose entrypoint died while the head was
down ends FAILED. The entrypoint is a stock ray:// driver running tasks;
with the default bbolt store (and Redis with GRAY_REQUIRE_REDIS=1)."""

import os
import signal
import subprocess
import sys
import time

import requests

from conftest import stable_port, wait_for
from test_head_failover import FailoverHead
from test_head_restart import redis_url  # noqa: F401 (a fixture)

RAY = os.path.join(os.path.dirname(sys.executable), "ray")

ENTRYPOINT = """
import os, sys, time
import ray
CLIENT, SIGNAL = sys.argv[1], sys.argv[2]
ray.init(CLIENT)

@ray.remote(num_cpus=0)
def square(x):
    return x * x

for i in range(3):
    print("before %d -> %d" % (i, ray.get(square.remote(i))), flush=True)
print("waiting pid=%d" % os.getpid(), flush=True)
while not os.path.exists(SIGNAL):
    time.sleep(0.05)
for i in range(3, 6):
    print("after %d -> %d" % (i, ray.get(square.remote(i), timeout=120)), flush=True)
    if i == 3:
        print("first_after_at=%f" % time.time(), flush=True)
print("done", flush=True)
"""


class JobsHead(FailoverHead):
    """A FailoverHead whose Jobs API (status port) is fixed too."""

    def __init__(self, gray_bin, storage=None, extra=()):
        super().__init__(gray_bin, storage, extra=extra)
        self.token = None
        self.status_port = stable_port()
        i = self.cmd.index("--status-port")
        self.cmd[i + 1] = str(self.status_port)
        self.url = "http://127.0.0.1:%d" % self.status_port

    def start(self):
        super().start()
        path = os.path.join(self.state_dir, "operator.token")
        self.operator_token = open(path).read().strip() if "token" in self.cmd else None


def cli_env(head=None):
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_JOB_HEADERS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(k, None)
    if head is not None and head.operator_token:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.operator_token)
    return env


def ray_job(head, *args, check=True):
    r = subprocess.run([RAY, "job", args[0], "--address", head.url, *args[1:]], capture_output=True, text=True,
                       timeout=180, env=cli_env(head))
    if check:
        assert r.returncode == 0, "ray job %s exited %d:\n%s\n%s" % (args, r.returncode, r.stdout, r.stderr)
    return r


def status(head, sid):
    """The job's status as `ray job status` prints it."""
    out = ray_job(head, "status", sid).stdout
    for st in ("PENDING", "RUNNING", "SUCCEEDED", "FAILED", "STOPPED"):
        if "Status for job '%s': %s" % (sid, st) in out:
            return st
    # Terminal statuses read "Job 'ID' succeeded", "failed", "was stopped".
    for word, st in (("succeeded", "SUCCEEDED"), ("failed", "FAILED"), ("was stopped", "STOPPED")):
        if "Job '%s' %s" % (sid, word) in out:
            return st
    raise AssertionError("no status in:\n" + out)


def api(head, path):
    headers = {"Authorization": "Bearer " + head.operator_token} if head.operator_token else {}
    r = requests.get(head.url + path, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def submit(head, tmp_path, name, signal_file):
    script = tmp_path / (name + ".py")
    script.write_text(ENTRYPOINT)
    r = ray_job(head, "submit", "--no-wait", "--submission-id", name, "--",
                sys.executable, str(script), head.client_address, signal_file)
    assert name in r.stdout, r.stdout
    return name


def wait_logs(head, sid, text):
    return wait_for(lambda: text in ray_job(head, "logs", sid).stdout and ray_job(head, "logs", sid).stdout,
                    timeout=120, every=0.2)


def check_job_survives(head, tmp_path, capsys):
    head.start()
    sig = str(tmp_path / "go")
    sid = submit(head, tmp_path, "gray-adopt-1", sig)
    logs = wait_logs(head, sid, "waiting pid=")
    pid = int(logs.split("waiting pid=", 1)[1].split()[0])
    assert status(head, sid) == "RUNNING"

    killed = time.time()
    head.kill9()
    os.kill(pid, 0)  # the entrypoint outlived the head
    head.start()
    serving = time.time() - killed
    assert status(head, sid) == "RUNNING", head.logs()[-4000:]
    # A follower started after the restart streams to the end.
    follow = subprocess.Popen([RAY, "job", "logs", "-f", "--address", head.url, sid], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=cli_env(head))
    open(sig, "w").close()
    wait_for(lambda: status(head, sid) in ("SUCCEEDED", "FAILED"), timeout=180, every=0.2)
    ended = time.time() - killed
    logs = ray_job(head, "logs", sid).stdout
    assert status(head, sid) == "SUCCEEDED", (logs, head.logs()[-4000:])
    for i in range(6):
        assert "%s %d -> %d" % ("before" if i < 3 else "after", i, i * i) in logs, logs
    assert "done" in logs
    followed, _ = follow.communicate(timeout=60)
    assert "after 5 -> 25" in followed and "done" in followed, followed
    info = api(head, "/api/jobs/" + sid)
    assert info["status"] == "SUCCEEDED" and info["driver_exit_code"] == 0, info
    first = float(logs.split("first_after_at=", 1)[1].split()[0]) - killed
    if head.operator_token:
        # The job's token worked across the restart (its driver ran tasks
        # after it) and is revoked now that the job has ended.
        toks = [t for t in api(head, "/api/gray/tokens") if t.get("note") == "job " + sid]
        assert len(toks) == 1 and toks[0].get("revoked"), toks
    with capsys.disabled():
        print("\n[%s] job adopted: kill -9 -> head serving %.2fs, -> entrypoint's first task after %.2fs, "
              "-> SUCCEEDED seen %.2fs" % (head.storage, serving, first, ended))


def test_running_job_survives_head_restart_bolt(gray_bin, tmp_path, capsys):
    head = JobsHead(gray_bin)
    try:
        check_job_survives(head, tmp_path, capsys)
    finally:
        head.stop()


def test_running_job_survives_head_restart_redis(gray_bin, tmp_path, capsys, redis_url):  # noqa: F811
    head = JobsHead(gray_bin, storage=redis_url)
    try:
        check_job_survives(head, tmp_path, capsys)
    finally:
        head.stop()


def test_running_job_survives_head_restart_token_mode(gray_bin, tmp_path, capsys):
    head = JobsHead(gray_bin, extra=["--auth-mode", "token"])
    try:
        check_job_survives(head, tmp_path, capsys)
    finally:
        head.stop()


def test_job_dead_while_head_was_down_fails(gray_bin, tmp_path):
    head = JobsHead(gray_bin)
    try:
        head.start()
        sid = submit(head, tmp_path, "gray-adopt-dead", str(tmp_path / "never"))
        logs = wait_logs(head, sid, "waiting pid=")
        pgid = os.getpgid(int(logs.split("waiting pid=", 1)[1].split()[0]))  # the entrypoint's wrapper's group
        head.kill9()
        os.killpg(pgid, signal.SIGKILL)  # the entrypoint and its wrapper die while the head is down
        wait_for(lambda: not os.path.exists("/proc/%d" % pgid) or _zombie(pgid), timeout=30, every=0.05)
        head.start()
        wait_for(lambda: status(head, sid) == "FAILED", timeout=60, every=0.2)
        out = ray_job(head, "status", sid).stdout
        info = api(head, "/api/jobs/" + sid)
        assert info["error_type"] == "JOB_SUPERVISOR_ACTOR_DIED" and info["driver_exit_code"] is None, info
        assert "ended while the head was down" in info["message"], info
    finally:
        head.stop()


def _zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_adopted_job_stops(gray_bin, tmp_path):
    """`ray job stop` after the restart ends the adopted entrypoint's whole
    process group and the job reads STOPPED."""
    head = JobsHead(gray_bin)
    try:
        head.start()
        sid = submit(head, tmp_path, "gray-adopt-stop", str(tmp_path / "never"))
        logs = wait_logs(head, sid, "waiting pid=")
        pid = int(logs.split("waiting pid=", 1)[1].split()[0])
        pgid = os.getpgid(pid)
        head.kill9()
        head.start()
        assert status(head, sid) == "RUNNING", head.logs()[-4000:]
        ray_job(head, "stop", sid)
        wait_for(lambda: status(head, sid) == "STOPPED", timeout=60, every=0.2)
        wait_for(lambda: _zombie(pid) and _zombie(pgid), timeout=30, every=0.05)
    finally:
        head.stop()
