"""kill -9 of the head, restarted on the same state: what the GCS store
keeps (the internal KV, uploaded working_dir packages, the job counter)
is there again, through the stock ray:// client and stock native drivers;
with the default bbolt store under --state-dir and with Redis."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from conftest import free_port, stable_port, wait_for


class Head:
    """A gray head (ray:// and native Ray on) that the test can kill -9 and
    start again with the same ports, state directory and storage."""

    def __init__(self, gray_bin, storage=None):
        # A short private temp dir: unix socket paths stay under 108 bytes.
        self.tmp = tempfile.mkdtemp(prefix="grh", dir="/tmp")
        self.state_dir = os.path.join(self.tmp, "state")
        self.port, self.gcs_port = stable_port(), stable_port()
        self.env = dict(os.environ, RAY_TMPDIR=self.tmp, TMPDIR=self.tmp)
        self.cmd = [
            gray_bin, "start", "--head",
            "--port", str(self.port), "--status-port", "0", "--node-port", "-1",
            "--gcs-port", str(self.gcs_port),
            "--python", sys.executable, "--num-cpus", "2", "--prestart-workers", "1",
            "--state-dir", self.state_dir,
            *(["--gcs-storage", storage] if storage else []),
        ]
        self.client_address = "ray://127.0.0.1:%d" % self.port
        self.proc, self.runs = None, 0

    def start(self):
        """Starts the head; returns when it has printed its banner (every
        port listening)."""
        self.runs += 1
        self.logfile = os.path.join(self.tmp, "head-%d.log" % self.runs)
        self.log = open(self.logfile, "w")
        # Its own process group, so that the workers it leaves when killed
        # can be ended too (they are this test's processes).
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)

        def up():
            if self.proc.poll() is not None:
                raise AssertionError("gray exited early:\n" + self.logs())
            return "GCS tables:" in self.logs() and "Native Ray:" in self.logs()

        wait_for(up, timeout=90, every=0.05)
        for line in self.logs().splitlines():
            if line.strip().startswith("Native Ray:"):
                self.native_address = line.split('address="', 1)[1].split('"', 1)[0]
            if line.strip().startswith("GCS tables:"):
                self.storage = line.split(":", 1)[1].strip()

    def logs(self):
        with open(self.logfile) as f:
            return f.read()

    def kill9(self):
        """kill -9 of the head process; then the workers it left behind."""
        pgid = self.proc.pid
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()
        self._kill_group(pgid)

    def _kill_group(self, pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
        if self.proc is not None:
            self._kill_group(self.proc.pid)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, source, timeout=120):
        """Runs a driver program (ray:// as CLIENT, native as ADDRESS); returns
        its stdout, failing the test if it fails."""
        prog = "CLIENT = %r\nADDRESS = %r\n" % (self.client_address, self.native_address) + textwrap.dedent(source)
        r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=timeout,
                           env=self.env)
        assert r.returncode == 0, "driver failed (%d):\n%s\n%s\n--- head log tail ---\n%s" % (
            r.returncode, r.stdout, r.stderr, self.logs()[-6000:])
        return r.stdout

    def background(self, source, stdin=False):
        """Starts a native driver that prints READY and then waits; returns
        the process and what it printed before READY. stdin: the process
        reads its stdin (a pipe) instead of inheriting it."""
        prog = "ADDRESS = %r\n" % self.native_address + textwrap.dedent(source)
        p = subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.PIPE if stdin else None, text=True, env=self.env)
        lines = []
        for line in p.stdout:
            if line.strip() == "READY":
                return p, lines
            lines.append(line)
        p.wait()
        raise AssertionError("background driver exited (%s):\n%s" % (p.returncode, "".join(lines)))


def values(out):
    """The KEY=VALUE lines a driver printed, as a dict (not the workers'
    log lines streamed to it, which start with "(name pid=...)")."""
    return dict(line.split("=", 1) for line in out.splitlines()
                if "=" in line and not line.startswith((" ", "(")))


def job_int(hex_id):
    return int.from_bytes(bytes.fromhex(hex_id), "little")


BEFORE_CLIENT = """
import ray
from ray.experimental import internal_kv as kv
ray.init(CLIENT, runtime_env={"working_dir": WD})

@ray.remote
def token():
    import restart_mod
    return restart_mod.TOKEN

print("token=" + ray.get(token.remote()))
kv._internal_kv_put(b"restart/a", b"alpha")
kv._internal_kv_put(b"restart/b", b"", namespace=b"ns1")
kv._internal_kv_put(b"restart/big", bytes(range(256)) * 4096)
print("job=" + ray.get_runtime_context().get_job_id())
pkgs = kv._internal_kv_list(b"gcs://_ray_pkg_")
assert len(pkgs) == 1, pkgs
print("pkg=" + pkgs[0].decode())
print("pkglen=%d" % len(kv._internal_kv_get(pkgs[0])))
"""

BEFORE_NATIVE = """
import ray
from ray.experimental import internal_kv as kv
ray.init(address=ADDRESS)
kv._internal_kv_put(b"native/k", b"from a native driver", namespace=b"nat")
print("job=" + ray.get_runtime_context().get_job_id())
"""

# A native driver still running when the head dies: its exported function
# is in the KV ("fun" namespace, keyed by its job).
LIVE_NATIVE = """
import sys, time, ray
from ray.experimental import internal_kv as kv
ray.init(address=ADDRESS)

@ray.remote
def exported():
    return 7

assert ray.get(exported.remote()) == 7
job = ray.get_runtime_context().get_job_id()
print("job=" + job)
print("exports=%d" % len(kv._internal_kv_list(b"RemoteFunction:" + job.encode(), namespace=b"fun")))
print("READY", flush=True)
time.sleep(600)
"""

AFTER_CLIENT = """
import ray
from ray.experimental import internal_kv as kv
ray.init(CLIENT)
assert kv._internal_kv_get(b"restart/a") == b"alpha", kv._internal_kv_get(b"restart/a")
assert kv._internal_kv_get(b"restart/b", namespace=b"ns1") == b""
assert kv._internal_kv_get(b"restart/big") == bytes(range(256)) * 4096
assert kv._internal_kv_get(b"native/k", namespace=b"nat") == b"from a native driver"
assert sorted(kv._internal_kv_list(b"restart/")) == [b"restart/a", b"restart/big"]
assert len(kv._internal_kv_get(PKG.encode())) == PKGLEN

# The uploaded package, unpacked anew by the restarted head from the KV.
@ray.remote(runtime_env={"working_dir": PKG})
def token():
    import restart_mod
    return restart_mod.TOKEN

print("token=" + ray.get(token.remote()))
print("job=" + ray.get_runtime_context().get_job_id())
"""

AFTER_NATIVE = """
import ray
from ray.experimental import internal_kv as kv
ray.init(address=ADDRESS)
assert kv._internal_kv_get(b"restart/a") == b"alpha"
print("job=" + ray.get_runtime_context().get_job_id())
print("stale=%d" % len(kv._internal_kv_list(b"RemoteFunction:" + OLDJOB.encode(), namespace=b"fun")))
"""


def check_restart(head, tmp_path, capsys):
    wd = tmp_path / "wd"
    wd.mkdir()
    tok = "tok-%d" % os.getpid()
    (wd / "restart_mod.py").write_text("TOKEN = %r\n" % tok)

    head.start()
    before = values(head.run("WD = %r\n" % str(wd) + BEFORE_CLIENT))
    assert before["token"] == tok
    native_before = values(head.run(BEFORE_NATIVE))
    live, printed = head.background(LIVE_NATIVE)
    try:
        live_vals = values("".join(printed))
        assert int(live_vals["exports"]) >= 1, printed
        old_jobs = [job_int(before["job"]), job_int(native_before["job"]), job_int(live_vals["job"])]
        assert len(set(old_jobs)) == 3, old_jobs

        t0 = time.monotonic()
        head.kill9()
    finally:
        live.kill()
        live.wait()
    head.start()
    up = time.monotonic() - t0

    after = values(head.run("PKG = %r\nPKGLEN = %s\n" % (before["pkg"], before["pkglen"]) + AFTER_CLIENT))
    served = time.monotonic() - t0
    assert after["token"] == tok
    native_after = values(head.run("OLDJOB = %r\n" % live_vals["job"] + AFTER_NATIVE))
    # Job numbers never repeat: every new job is numbered above the old ones.
    assert min(job_int(after["job"]), job_int(native_after["job"])) > max(old_jobs), (old_jobs, after, native_after)
    # The exports of the job that was running when the head died are gone.
    assert native_after["stale"] == "0", native_after
    with capsys.disabled():
        print("\n[%s] kill -9 -> restarted head serving: %.2fs; -> first ray:// client done: %.2fs"
              % (head.storage, up, served))


def test_restart_keeps_kv_packages_and_job_counter_bolt(gray_bin, tmp_path, capsys):
    head = Head(gray_bin)
    try:
        check_restart(head, tmp_path, capsys)
        assert head.storage == "bolt " + os.path.join(head.state_dir, "gcs.db")
    finally:
        head.stop()


@pytest.fixture
def redis_url(tmp_path):
    """A real redis-server on a free port, for this test only."""
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("GRAY_REQUIRE_REDIS"):
            pytest.fail("GRAY_REQUIRE_REDIS is set but redis-server is not on PATH (make ci-deps installs it)")
        pytest.skip("redis-server not on PATH (make ci-deps installs it)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import socket

    def ping():
        if proc.poll() is not None:
            raise AssertionError("redis-server exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    wait_for(ping, timeout=20, every=0.05)
    yield "redis://127.0.0.1:%d/0?namespace=restart-%d" % (port, os.getpid())
    proc.kill()
    proc.wait()


def test_restart_keeps_kv_packages_and_job_counter_redis(gray_bin, tmp_path, capsys, redis_url):
    head = Head(gray_bin, storage=redis_url)
    try:
        check_restart(head, tmp_path, capsys)
        assert head.storage.startswith("redis 127.0.0.1:") and "prefix gray:gcs:{restart-" in head.storage
    finally:
        head.stop()


def test_memory_storage_keeps_nothing(gray_bin, tmp_path):
    """--gcs-storage memory: the same restart finds the KV empty and the
    job numbers start over (what every head did before the store)."""
    head = Head(gray_bin, storage="memory")
    try:
        head.start()
        assert head.storage.startswith("memory")
        first = values(head.run("""
            import ray
            from ray.experimental import internal_kv as kv
            ray.init(CLIENT)
            kv._internal_kv_put(b"restart/a", b"alpha")
            print("job=" + ray.get_runtime_context().get_job_id())
        """))
        head.kill9()
        head.start()
        again = values(head.run("""
            import ray
            from ray.experimental import internal_kv as kv
            ray.init(CLIENT)
            print("a=%r" % kv._internal_kv_get(b"restart/a"))
            print("job=" + ray.get_runtime_context().get_job_id())
        """))
        assert again["a"] == "None"
        assert job_int(again["job"]) == job_int(first["job"])
        assert not os.path.exists(os.path.join(head.state_dir, "gcs.db"))
    finally:
        head.stop()
