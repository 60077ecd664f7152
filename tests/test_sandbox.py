"""Sandboxed workers (issue 13): code a client sends runs in a bubblewrap
sandbox on the provider. It cannot read the provider's node key, state dir,
session dir or home, another session's working_dir or /tmp files, or the
device nodes of GPUs it was not given; a task past its memory limit dies
alone with OutOfMemoryError while the provider keeps serving. All driven
with the stock ray client against pools these tests start."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import Pool, Provider, run_client_script, wait_for

PROBE = """
import os

def probe(path):
    try:
        if os.path.isdir(path):
            return "listed %d" % len(os.listdir(path))
        with open(path, "rb") as f:
            return "read %d" % len(f.read())
    except OSError as e:
        return type(e).__name__
"""


def connect(ray, pool):
    ray.init("ray://" + pool.address)


@pytest.fixture
def provider_pool(gray_bin):
    """A head offering no CPUs and one provider, whose HOME holds a secret:
    tasks run on the provider."""
    # Outside pytest's dir, which the pools share with workers.
    home = Path(tempfile.mkdtemp(prefix="gray-provider-home-"))
    (home / "wallet.json").write_text("provider secret")
    head = Pool(gray_bin, num_cpus=0, extra=["--prestart-workers", "0"])
    prov = None
    try:
        prov = Provider(gray_bin, head, num_cpus=2, env=dict(os.environ, HOME=str(home)))
        yield head, prov, home
    finally:
        if prov:
            prov.stop()
        head.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_task_cannot_read_provider_secrets(provider_pool):
    import ray

    head, prov, home = provider_pool
    key = os.path.join(prov.state_dir, "node-key.pem")
    assert os.path.exists(key)  # the provider keeps its node key here
    sessions = glob.glob("/tmp/gray/provider_*_%d" % prov.proc.pid)
    assert len(sessions) == 1, sessions
    session = sessions[0]
    connect(ray, head)
    try:
        wait_for(lambda: ray.cluster_resources().get("CPU", 0) >= 2)
        ns = {}
        exec(PROBE, ns)
        probe = ns["probe"]

        @ray.remote
        def look(paths):
            exec(PROBE, globals())
            out = {p: probe(p) for p in paths}  # noqa: F821
            with open("/tmp/mine", "w") as f:  # its own /tmp is writable
                f.write("x")
            out["own tmp"] = probe("/tmp/mine")  # noqa: F821
            return out

        paths = [key, prov.state_dir, session, str(home), str(home / "wallet.json"), os.path.join(session, "raylet.sock")]
        got = ray.get(look.remote(paths))
        for p in paths:
            assert probe(p).startswith(("read", "listed")) or p.endswith(".sock")  # they exist out here
            assert got[p] in ("FileNotFoundError", "PermissionError"), (p, got[p])
        assert got["own tmp"] == "read 1"
    finally:
        ray.shutdown()
    assert "sandbox on: workers run in bubblewrap" in prov.logs()


@pytest.fixture(scope="module")
def sandbox_pool(gray_bin):
    p = Pool(gray_bin, num_cpus=3, extra=["--prestart-workers", "1"])
    yield p
    p.stop()


def test_head_state_and_session_dirs_hidden(sandbox_pool):
    state = sandbox_pool.proc.args[sandbox_pool.proc.args.index("--state-dir") + 1]
    assert os.listdir(state)  # the pool CA and join secret
    session = glob.glob("/tmp/gray/session_*_%d" % sandbox_pool.proc.pid)
    assert len(session) == 1
    src = PROBE + """
import json, ray, sys
ray.init(os.environ["GRAY_ADDRESS"])

@ray.remote
def look(paths):
    exec(%r, globals())
    return {p: probe(p) for p in paths}

print(json.dumps(ray.get(look.remote(sys.argv[1:]))))
""" % PROBE
    out = subprocess.run(
        [sys.executable, "-c", src, state, *[os.path.join(state, f) for f in os.listdir(state)], session[0]],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, GRAY_ADDRESS="ray://" + sandbox_pool.address),
    )
    assert out.returncode == 0, out.stderr
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got and all(v == "FileNotFoundError" for v in got.values()), got


def test_other_sessions_working_dir_is_hidden(sandbox_pool, tmp_path):
    (tmp_path / "secret_model.py").write_text("WEIGHTS = 'alice only'\n")
    alice = """
import os, ray
ray.init(os.environ["GRAY_ADDRESS"], runtime_env={"working_dir": %r})

@ray.remote
def where():
    import secret_model
    return os.getcwd(), secret_model.WEIGHTS

print("CWD", *ray.get(where.remote()))
""" % str(tmp_path)
    out = run_client_script(sandbox_pool, alice)
    assert out.returncode == 0, out.stderr
    line = [x for x in out.stdout.splitlines() if x.startswith("CWD ")][0]
    _, cwd, weights = line.split(" ", 2)
    assert weights == "alice only"
    assert os.path.exists(os.path.join(cwd, "secret_model.py"))  # unpacked on the node
    mallory = PROBE + """
import ray
ray.init(os.environ["GRAY_ADDRESS"])

@ray.remote
def steal(path):
    exec(%r, globals())
    return probe(path), probe(os.path.join(path, "secret_model.py"))

print("GOT", *ray.get(steal.remote(os.environ["CWD"])))
""" % PROBE
    out = run_client_script(sandbox_pool, mallory, env={"CWD": cwd})
    assert out.returncode == 0, out.stderr
    assert "GOT FileNotFoundError FileNotFoundError" in out.stdout, out.stdout


def test_private_tmp_per_session(sandbox_pool):
    host_file = tempfile.NamedTemporaryFile(dir="/tmp", prefix="gray-host-", delete=False)
    host_file.write(b"host")
    host_file.close()
    try:
        writer = """
import os, ray
ray.init(os.environ["GRAY_ADDRESS"])

@ray.remote
def write(host_file):
    with open("/tmp/alice.txt", "w") as f:
        f.write("alice's scratch")
    return os.path.exists(host_file)

@ray.remote
def read():
    return open("/tmp/alice.txt").read()

print("WROTE", ray.get(write.remote(os.environ["HOST_FILE"])), ray.get(read.remote()))
"""
        out = run_client_script(sandbox_pool, writer, env={"HOST_FILE": host_file.name})
        assert out.returncode == 0, out.stderr
        # The host's /tmp is not the worker's; the same worker reads back.
        assert "WROTE False alice's scratch" in out.stdout, out.stdout
        assert not os.path.exists("/tmp/alice.txt")
        reader = """
import os, ray
ray.init(os.environ["GRAY_ADDRESS"])

@ray.remote
def look():
    return os.path.exists("/tmp/alice.txt") or "alice.txt" in os.listdir("/tmp")

print("SEEN", *ray.get([look.remote() for _ in range(3)]))
"""
        out = run_client_script(sandbox_pool, reader)
        assert out.returncode == 0, out.stderr
        assert "SEEN False False False" in out.stdout, out.stdout
    finally:
        os.unlink(host_file.name)


def test_task_pid_is_the_node_reported_pid(sandbox_pool):
    """os.getpid() in a sandboxed task is the pid the node reports and that
    signals reach from outside, as for an unsandboxed worker."""
    import json
    import urllib.request

    import ray

    connect(ray, sandbox_pool)
    try:

        @ray.remote
        def pid():
            import psutil
            # Code that inspects itself with psutil sees this process.
            me = psutil.Process()
            assert me.pid == os.getpid() == psutil.Process(os.getpid()).pid, (me.pid, os.getpid())
            assert psutil.pid_exists(os.getpid()) and me.memory_info().rss > 0
            return os.getpid()

        p = ray.get(pid.remote())
        url = "http://127.0.0.1:%d/api/gray/status" % sandbox_pool.status_port
        with urllib.request.urlopen(url) as r:
            pids = [w["pid"] for w in json.load(r)["workers"]]
        assert p in pids
        os.kill(p, 0)  # a live process out here
    finally:
        ray.shutdown()


def test_only_assigned_gpu_device_nodes(gray_bin, tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ["nvidia%d" % i for i in range(8)] + ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"]:
        (dev / name).write_text("fake " + name)
    pool = Pool(gray_bin, num_cpus=4, extra=["--gpu-mock", "dgxh100", "--prestart-workers", "0", "--sandbox-dev-dir", str(dev)])
    import ray

    try:
        connect(ray, pool)

        @ray.remote(num_gpus=1)
        def gpu_task():
            mine = ray.get_gpu_ids()
            seen = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
            contents = {n: open("/dev/" + n).read() for n in seen}
            others = {}
            for i in range(8):
                try:
                    open("/dev/nvidia%d" % i).close()
                    others[i] = "opened"
                except OSError as e:
                    others[i] = type(e).__name__
            return mine, seen, contents, others

        @ray.remote(num_gpus=0)
        def cpu_task():
            return sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))

        mine, seen, contents, others = ray.get(gpu_task.remote())
        assert len(mine) == 1
        g = mine[0]
        assert seen == sorted(["nvidia%d" % g, "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"])
        assert contents["nvidia%d" % g] == "fake nvidia%d" % g  # the node given, not a stand-in
        assert others[g] == "opened"
        assert all(v == "FileNotFoundError" for i, v in others.items() if i != g), others
        assert ray.get(cpu_task.remote()) == []
    finally:
        ray.shutdown()
        pool.stop()


def test_memory_limit_kills_only_that_task(sandbox_pool):
    import ray

    if "limits are NOT applied" in sandbox_pool.logs():
        pytest.skip("this machine gives the pool no writable cgroup hierarchy")
    connect(ray, sandbox_pool)
    try:

        @ray.remote
        def steady(seconds):
            time.sleep(seconds)
            return "still here"

        @ray.remote(memory=150 * 1024 * 1024, max_retries=1)
        def hog():
            chunks = []
            for _ in range(64):  # 64 x 16 MiB, touched
                chunks.append(bytearray(16 << 20))
                chunks[-1][::4096] = b"x" * len(chunks[-1][::4096])
            return len(chunks)

        other = steady.remote(4)
        with pytest.raises(ray.exceptions.OutOfMemoryError) as info:
            ray.get(hog.remote(), timeout=120)
        assert "memory" in str(info.value)
        assert ray.get(other, timeout=60) == "still here"
        assert ray.get(steady.remote(0)) == "still here"

        @ray.remote(memory=400 * 1024 * 1024)
        def fits():
            b = bytearray(64 << 20)
            b[::4096] = b"x" * len(b[::4096])
            return len(b)

        assert ray.get(fits.remote()) == 64 << 20
    finally:
        ray.shutdown()
    assert sandbox_pool.proc.poll() is None


def test_sandbox_off_says_so_and_exposes(gray_bin, tmp_path):
    pool = Pool(gray_bin, num_cpus=1, extra=["--sandbox=off", "--prestart-workers", "0"])
    import ray

    try:
        assert "WARNING: --sandbox=off" in pool.logs()
        state = pool.proc.args[pool.proc.args.index("--state-dir") + 1]
        connect(ray, pool)

        @ray.remote
        def look(path):
            return sorted(os.listdir(path))

        assert ray.get(look.remote(state)) == sorted(os.listdir(state))
    finally:
        ray.shutdown()
        pool.stop()


def test_refuses_to_start_without_bubblewrap(gray_bin, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    out = subprocess.run(
        [gray_bin, "start", "--head", "--port", "0", "--status-port", "0", "--node-port", "-1", "--gcs-port", "-1",
         "--python", sys.executable, "--num-cpus", "1", "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, PATH=str(empty)),
    )
    assert out.returncode != 0
    assert "bubblewrap" in out.stderr and "--sandbox=off" in out.stderr, out.stderr
