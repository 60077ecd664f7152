"""Pytest fixtures: a real gray pool (built from this checkout) driven by the
stock ray==2.60.0 client."""

import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_stable_ports = set()


def stable_port():
    """A port free for TCP and UDP now, outside the kernel's ephemeral range
    (and Ray's worker ports, 10002-19999): for a process that is killed and
    started again on the same ports, so that no outgoing connection made
    meanwhile can be given that port."""
    import random

    lo, hi = 20000, 32767
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph_lo = int(f.read().split()[0])
        hi = min(hi, eph_lo - 1)
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(200):
        port = random.randint(lo, hi)
        if port in _stable_ports:
            continue  # handed out already: its process may not have bound it yet
        try:
            with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
            _stable_ports.add(port)
            return port
        except OSError:
            continue
    return free_port()


@pytest.fixture(scope="session")
def gray_bin():
    """The gray binary: $GRAY_BIN, or built from this checkout."""
    path = os.environ.get("GRAY_BIN")
    if path:
        return path
    out = os.path.join(tempfile.mkdtemp(prefix="gray-bin-"), "gray")
    env = dict(os.environ)
    env.setdefault("CGO_CFLAGS", "-O2 -g -Wno-deprecated-declarations")
    subprocess.run(["go", "build", "-o", out, "./cmd/gray"], cwd=ROOT, check=True, env=env)
    return out


# Tests hand files to workers and read what workers wrote through pytest's
# tmp_path. Workers run sandboxed with a private /tmp, so pools share the
# pytest base temp dir with them (--sandbox-share), as an operator shares a
# data directory. Set by the autouse fixture below.
SANDBOX_SHARES = []


@pytest.fixture(scope="session", autouse=True)
def _share_tmp_with_workers(tmp_path_factory):
    SANDBOX_SHARES[:] = [str(tmp_path_factory.getbasetemp())]


def sandbox_share_args(extra=()):
    if "--sandbox=off" in extra:
        return []
    return [a for s in SANDBOX_SHARES for a in ("--sandbox-share", s)]


def stop_process(proc):
    """SIGTERM, then SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Pool:
    """A gray pool process on loopback."""

    def __init__(self, gray_bin, num_cpus=4, extra=()):
        self.port = free_port()
        self.status_port = free_port()
        self.address = "127.0.0.1:%d" % self.port
        self.log = tempfile.NamedTemporaryFile(prefix="gray-pool-", suffix=".log", delete=False)
        cmd = [
            gray_bin, "start", "--head",
            "--port", str(self.port),
            "--status-port", str(self.status_port),
            "--python", sys.executable,
            "--num-cpus", str(num_cpus),
            "--node-port", "0",
            "--gcs-port", "-1",
            "--state-dir", tempfile.mkdtemp(prefix="gray-head-state-"),
            *sandbox_share_args(extra),
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gray exited early:\n" + self.logs())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("gray did not start:\n" + self.logs())
        # "Providers:    gray start --address=HOST:PORT --token=TOKEN"
        self.node_address = self.token = None
        while time.time() < deadline:
            for line in self.logs().splitlines():
                if line.strip().startswith("Providers:"):
                    for word in line.split():
                        if word.startswith("--address="):
                            self.node_address = word.split("=", 1)[1]
                        if word.startswith("--token="):
                            self.token = word.split("=", 1)[1]
            if self.node_address or "--node-port" in extra:
                return
            time.sleep(0.1)
        raise RuntimeError("gray printed no provider address:\n" + self.logs())

    def logs(self):
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        stop_process(self.proc)


class Provider:
    """A gray provider process joined to a pool."""

    def __init__(self, gray_bin, pool, num_cpus=2, region=None, extra=(), state_dir=None, address=None, env=None):
        self.gray_bin, self.pool, self.env = gray_bin, pool, env
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="gray-provider-state-")
        self.log = tempfile.NamedTemporaryFile(prefix="gray-provider-", suffix=".log", delete=False)
        cmd = [
            gray_bin, "start",
            "--address", address or pool.node_address,
            "--token", pool.token,
            "--state-dir", self.state_dir,
            "--python", sys.executable,
            "--num-cpus", str(num_cpus),
            "--prestart-workers", "1",
            *(["--region", region] if region else []),
            *sandbox_share_args(extra),
            *extra,
        ]
        self.cmd = cmd
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("provider exited early:\n" + self.logs())
            for line in self.logs().splitlines():
                if line.startswith("gray provider ") and "joined" in line:
                    self.node_prefix = line.split()[2]
                    return
            time.sleep(0.1)
        raise RuntimeError("provider did not join:\n" + self.logs())

    def logs(self):
        with open(self.log.name) as f:
            return f.read()

    def kill(self):
        """kill -9, the way a provider vanishes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        stop_process(self.proc)


@pytest.fixture(scope="session")
def pool(gray_bin):
    p = Pool(gray_bin)
    yield p
    p.stop()


@pytest.fixture
def ray_client(pool):
    import ray

    ray.init("ray://" + pool.address)
    try:
        yield ray
    finally:
        ray.shutdown()


def run_client_script(pool, source, timeout=120, env=None):
    """Run a stock-client program in a fresh interpreter (one ray client per
    process); returns the CompletedProcess."""
    e = dict(os.environ)
    e["GRAY_ADDRESS"] = "ray://" + pool.address
    if env:
        e.update(env)
    return subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=timeout, env=e
    )


def pytest_addoption(parser):
    parser.addoption("--run-huge", action="store_true", default=False, help="run the 1 GiB object test")


# --- WAN harness (tests/test_wan.py, bench/wan.py) ---------------------------


def build_graywan():
    """The graywan binary: $GRAYWAN_BIN, or built from this checkout."""
    path = os.environ.get("GRAYWAN_BIN")
    if path:
        return path
    out = os.path.join(tempfile.mkdtemp(prefix="graywan-bin-"), "graywan")
    subprocess.run(["go", "build", "-o", out, "./cmd/graywan"], cwd=ROOT, check=True)
    return out


@pytest.fixture(scope="session")
def graywan_bin():
    return build_graywan()


class WanLinks:
    """A graywan process: emulated WAN links (userspace UDP and TCP proxies)
    in front of a head, one per provider, with its HTTP control API.

    specs: link specs as graywan's --link takes them (name=..., rtt=...);
    udp_target and tcp_target default to the pool's node and client ports.
    links[name] is {"udp": HOST:PORT, "tcp": HOST:PORT}: join a provider
    with Provider(..., **wan.provider_args(name))."""

    def __init__(self, graywan_bin, pool, specs, timeout=30):
        self.log = tempfile.NamedTemporaryFile(prefix="graywan-", suffix=".log", delete=False)
        cmd = [graywan_bin, "--control", "127.0.0.1:0"]
        self.gossip_ports = {}
        for spec in specs:
            if "udp_target=" not in spec and pool.node_address:
                spec += ",udp_target=" + pool.node_address
            if "tcp_target=" not in spec:
                spec += ",tcp_target=" + pool.address
            if "gossip_target=" not in spec:
                # The provider gossips on this port and advertises the
                # link's gossip proxy, so probes of it cross the link.
                name = dict(kv.split("=", 1) for kv in spec.split(",") if "=" in kv)["name"]
                self.gossip_ports[name] = free_port()
                spec += ",gossip_target=127.0.0.1:%d" % self.gossip_ports[name]
            cmd += ["--link", spec]
        self.cmd = cmd
        # stdin is a pipe we never write: graywan exits when it closes, so it
        # cannot outlive this process.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.links, self.control = {}, None
        deadline = time.time() + timeout
        import json

        for line in self.proc.stdout:
            line = line.strip()
            if line == "READY":
                break
            obj = json.loads(line)
            if "control" in obj:
                self.control = obj["control"]
            else:
                self.links[obj["name"]] = obj
            if time.time() > deadline:
                break
        else:
            raise RuntimeError("graywan exited before READY:\n" + self.logs())
        if self.control is None:
            raise RuntimeError("graywan printed no control address:\n" + self.logs())

    def provider_args(self, name):
        """Provider keyword arguments that join through link name."""
        link = self.links[name]
        # The emulator models only the links to the head: objects moving
        # directly between providers would bypass it, so they go through
        # the head here.
        extra = ["--head-client-address", link["tcp"], "--no-peer"]
        if link.get("gossip") and name in self.gossip_ports:
            extra += ["--gossip-port", str(self.gossip_ports[name]), "--gossip-advertise", link["gossip"]]
        return {"address": link["udp"], "extra": extra}

    def _call(self, method, path):
        import json
        import urllib.request

        req = urllib.request.Request("http://%s%s" % (self.control, path), method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def partition(self, name, proto=None):
        return self._call("POST", "/partition?link=%s%s" % (name, "&proto=" + proto if proto else ""))

    def heal(self, name, proto=None):
        return self._call("POST", "/heal?link=%s%s" % (name, "&proto=" + proto if proto else ""))

    def stats(self, name=None):
        """Per-link counters: {name: {"udp": {"up": {...}, "down": {...}}, "tcp": ...}};
        up is provider→head."""
        return self._call("GET", "/stats" + ("?link=" + name if name else ""))

    def logs(self):
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        stop_process(self.proc)


def connected(pool):
    """Yields the stock ray module connected to pool (a fixture body):
    ray.init on the pool's client address, shutdown afterwards."""
    import ray

    ray.init("ray://" + pool.address)
    try:
        yield ray
    finally:
        ray.shutdown()


def wait_for(cond, timeout=60, every=0.2):
    """Polls cond until it returns something truthy, and returns that; fails
    the test when timeout seconds pass first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in %ss" % timeout)


def node_of(ray, provider):
    """The node id (hex) of a Provider process, as ray.nodes() shows it."""
    ids = [n["NodeID"] for n in ray.nodes() if n["NodeID"].startswith(provider.node_prefix)]
    assert len(ids) == 1, ray.nodes()
    return ids[0]
