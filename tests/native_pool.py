"""A gray head serving native Ray (GCS gRPC, raylet, plasma) for tests that
drive stock `ray.init(address=...)` drivers, each in a fresh interpreter."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

from conftest import free_port, stop_process


class _Driver:
    """What both targets share: running driver programs against .address."""

    def session_dir(self):
        return os.path.realpath(os.path.join(self.tmp, "ray", "session_latest"))

    def run(self, source, timeout=120, env=None, address=None):
        """Runs a driver program; `ADDRESS` in it is the GCS address."""
        e = dict(self.env)
        e["GRAY_NATIVE_ADDRESS"] = address or self.address
        if env:
            e.update(env)
        prog = "import os\nADDRESS = os.environ['GRAY_NATIVE_ADDRESS']\n" + textwrap.dedent(source)
        return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=timeout, env=e)

    def check(self, source, timeout=120, **kw):
        r = self.run(source, timeout=timeout, **kw)
        assert r.returncode == 0, f"driver failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n--- {self.name} log tail ---\n{self.logs()[-6000:]}"
        return r.stdout


def kill_by_tmp(tmp):
    """Ends a stock Ray node's processes: not `ray stop`, which ends every
    Ray process on the machine. A node's processes all name its private
    temp dir on their command lines (or are children of one that does)."""
    import ray  # noqa: F401  (puts the psutil Ray ships on sys.path)
    import psutil
    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(tmp in arg for arg in proc.info["cmdline"] or []):
                mine.append(proc)
                mine.extend(proc.children(recursive=True))
        except psutil.Error:
            pass
    for proc in mine:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(mine, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass


class StockRay(_Driver):
    """A stock `ray start --head` with the same interface, so that the native
    suite can run against stock Ray for comparison (NATIVE_TARGET=ray)."""

    name = "ray"

    def __init__(self, gray_bin=None, num_cpus=2, extra=()):
        self.tmp = tempfile.mkdtemp(prefix="grr", dir="/tmp")
        # Stock Ray streams runtime_env set-up logs to drivers only when
        # asked; gray does by default.
        self.env = dict(os.environ, RAY_TMPDIR=self.tmp, TMPDIR=self.tmp, RAY_RUNTIME_ENV_LOG_TO_DRIVER_ENABLED="1")
        self.ray = os.path.join(os.path.dirname(sys.executable), "ray")
        port = free_port()
        # Its Ray Client proxier's port (tests of ray:// sessions use it).
        self.client_port = free_port()
        self.logfile = os.path.join(self.tmp, "ray-start.log")
        with open(self.logfile, "w") as log:
            subprocess.run([self.ray, "start", "--head", "--port", str(port), "--num-cpus", str(num_cpus),
                            "--include-dashboard=false", "--disable-usage-stats",
                            "--ray-client-server-port", str(self.client_port),
                            "--temp-dir", os.path.join(self.tmp, "ray")],
                           check=True, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.address = "127.0.0.1:%d" % port

    def logs(self):
        with open(self.logfile) as f:
            return f.read()

    def stop(self):
        # Not `ray stop`: that ends every Ray process on the machine. This
        # cluster's processes all name its private temp dir on their
        # command lines (or are children of one that does).
        kill_by_tmp(self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)


def make_target(gray_bin, providers=False, **kw):
    """The cluster a native test drives: gray (default) or stock Ray when
    NATIVE_TARGET=ray."""
    if os.environ.get("NATIVE_TARGET") == "ray":
        return StockRay(gray_bin, **kw)
    return NativePool(gray_bin, providers=providers, **kw)


class NativePool(_Driver):
    name = "gray"

    def __init__(self, gray_bin, num_cpus=2, extra=(), providers=False):
        # A short private temp dir: unix socket paths stay under 108 bytes,
        # and ray_current_cluster / session_latest are ours alone.
        self.tmp = tempfile.mkdtemp(prefix="grn", dir="/tmp")
        self.gcs_port = free_port()
        self.port = free_port()
        self.log = open(os.path.join(self.tmp, "head.log"), "w+")
        self.env = dict(os.environ, RAY_TMPDIR=self.tmp, TMPDIR=self.tmp)
        cmd = [
            gray_bin, "start", "--head",
            "--port", str(self.port), "--status-port", "0", "--node-port", "0" if providers else "-1",
            "--gcs-port", str(self.gcs_port),
            "--python", sys.executable, "--num-cpus", str(num_cpus),
            "--prestart-workers", "1",
            "--state-dir", os.path.join(self.tmp, "state"),
            *extra,
        ]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        self.address = self.node_address = self.token = None
        # Native ports for a provider of this pool: a free block, picked
        # away from the ports tests take at random.
        self.native_ports = 42000 + (os.getpid() % 500) * 32
        deadline = time.time() + 60
        while time.time() < deadline and (self.address is None or (providers and self.token is None)):
            if self.proc.poll() is not None:
                raise RuntimeError("gray exited early:\n" + self.logs())
            for line in self.logs().splitlines():
                if line.strip().startswith("Native Ray:"):
                    self.address = line.split('address="', 1)[1].split('"', 1)[0]
                # "Providers:    gray start --address=HOST:PORT --token=TOKEN"
                if line.strip().startswith("Providers:"):
                    for word in line.split():
                        if word.startswith("--address="):
                            self.node_address = word.split("=", 1)[1]
                        if word.startswith("--token="):
                            self.token = word.split("=", 1)[1]
            time.sleep(0.1)
        if self.address is None:
            self.stop()
            raise RuntimeError("gray printed no native address:\n" + self.logs())

    def logs(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        stop_process(self.proc)
        shutil.rmtree(self.tmp, ignore_errors=True)


class SecondNode:
    """A second native node with 2 CPUs and the custom resource side=3:
    joined over TCP (`gray native-node`, kind "lan") or a provider that joined
    over QUIC and hosts native Ray through gray's tunnel (kind "quic")."""

    def __init__(self, gray_bin, head, kind, resources='{"side": 3}', ports=None, address=None, extra=(), wait=True):
        """resources: the node's custom resources (JSON); ports: the first of
        32 native ports for a second provider of the same pool (the first
        provider takes head.native_ports). For kind "quic": address is where
        the provider dials the head (default head.node_address, e.g. a WAN
        link in front of it), extra more `gray start` arguments, and with
        wait=False the caller calls wait_joined() (to start several at once)."""
        if ports is None:
            ports = getattr(head, "native_ports", 0)
        self.tmp = tempfile.mkdtemp(prefix="grm", dir="/tmp")
        self.log = open(os.path.join(self.tmp, "node.log"), "w+")
        env = dict(os.environ, RAY_TMPDIR=self.tmp, TMPDIR=self.tmp)
        if head.name == "ray":
            ray = os.path.join(os.path.dirname(sys.executable), "ray")
            subprocess.run([ray, "start", "--address", head.address, "--num-cpus", "2",
                            "--resources", resources, "--node-ip-address", "127.0.0.2",
                            "--temp-dir", os.path.join(self.tmp, "ray")],
                           check=True, stdout=self.log, stderr=subprocess.STDOUT, env=env)
            self.proc = None
        elif kind == "quic":
            self.proc = subprocess.Popen(
                [gray_bin, "start", "--address", address or head.node_address, "--token", head.token, "--native",
                 "--native-ports", "%d-%d" % (ports, ports + 31),
                 "--state-dir", os.path.join(self.tmp, "state"), "--python", sys.executable,
                 "--num-cpus", "2", "--resources", resources, "--prestart-workers", "0", *extra],
                stdout=self.log, stderr=subprocess.STDOUT, env=env)
            if wait:
                self.wait_joined()
        else:
            self.proc = subprocess.Popen(
                [gray_bin, "native-node", "--gcs-address", head.address, "--node-ip", "127.0.0.2",
                 "--python", sys.executable, "--num-cpus", "2", "--resources", resources],
                stdout=self.log, stderr=subprocess.STDOUT, env=env)
            deadline = time.time() + 60
            while "NODE_ID=" not in self.logs():
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("native-node did not start:\n" + self.logs())
                time.sleep(0.1)

    def wait_joined(self, timeout=60):
        """Waits for a "quic" provider to join the head's native Ray."""
        deadline = time.time() + timeout
        while "native Ray node joined the head" not in self.logs():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("provider did not join native Ray:\n" + self.logs())
            time.sleep(0.1)

    def logs(self):
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
        else:
            kill_by_tmp(self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)
