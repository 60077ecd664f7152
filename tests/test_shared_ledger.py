"""One resource ledger for the head's two raylets: work submitted through
ray:// and work from native drivers draw from the same CPUs and GPUs, so a
2-CPU head never runs more than two 1-CPU holders across both worlds, and
the two never hand out the same GPU (issue 12)."""

import subprocess
import sys
import textwrap

import pytest

from conftest import connected
from native_pool import NativePool


@pytest.fixture(scope="module")
def head(gray_bin):
    p = NativePool(gray_bin, num_cpus=2, extra=["--num-gpus", "2"])
    yield p
    p.stop()


@pytest.fixture
def client(head):
    class _P:
        address = "127.0.0.1:%d" % head.port
    yield from connected(_P)


def native_driver(head, source):
    """Starts a native driver that talks with the test line by line: it
    prints what it reached and reads a line from stdin to go on."""
    e = dict(head.env, GRAY_NATIVE_ADDRESS=head.address)
    prog = "import os, sys\nADDRESS = os.environ['GRAY_NATIVE_ADDRESS']\n" + textwrap.dedent(source)
    return subprocess.Popen([sys.executable, "-c", prog], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e)


def expect(proc, word, head):
    """Reads the driver's lines until one is word; fails with its output if
    it exits first."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.strip() == word:
            return
    proc.wait()
    pytest.fail(f"driver exited ({proc.returncode}) before {word!r}:\n{''.join(seen)}\n{proc.stderr.read()}"
                f"\n--- head log tail ---\n{head.logs()[-4000:]}")


def send(proc, line):
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def finish(proc, head):
    out, err = proc.communicate(timeout=120)  # closes its stdin: it ends
    assert proc.returncode == 0, f"driver failed:\n{out}\n{err}\n--- head log tail ---\n{head.logs()[-4000:]}"
    return out


def test_native_task_waits_for_ray_client_holders(head, client):
    ray = client

    @ray.remote(num_cpus=1)
    class Holder:
        def ping(self):
            return "up"

    holders = [Holder.remote() for _ in range(2)]
    assert ray.get([h.ping.remote() for h in holders]) == ["up", "up"]

    drv = native_driver(head, """
        import ray
        ray.init(address=ADDRESS)

        import time

        # The native GCS's view counts the ray:// holders (it polls the
        # raylet, which reports the shared ledger).
        deadline = time.time() + 60
        while ray.available_resources().get("CPU", 0) != 0 and time.time() < deadline:
            time.sleep(0.2)
        print("NATIVE-CPU", int(ray.available_resources().get("CPU", 0)), flush=True)

        @ray.remote(num_cpus=1)
        def f():
            return "ran"

        ref = f.remote()
        ready, _ = ray.wait([ref], timeout=3)
        print("NOT-READY" if not ready else "READY-TOO-EARLY", flush=True)
        sys.stdin.readline()
        print(ray.get(ref), flush=True)
        print("DONE", flush=True)
    """)
    try:
        line = drv.stdout.readline().strip()
        assert line == "NATIVE-CPU 0", f"native view of CPU while ray:// holds both: {line!r}"
        line = drv.stdout.readline().strip()
        assert line == "NOT-READY", f"the native task ran while ray:// held both CPUs: {line!r}\n{head.logs()[-3000:]}"
        ray.kill(holders[0])
        send(drv, "go")
        expect(drv, "DONE", head)
        finish(drv, head)
    finally:
        if drv.poll() is None:
            drv.kill()
    ray.kill(holders[1])


def test_ray_client_task_waits_for_native_holders(head, client):
    ray = client
    drv = native_driver(head, """
        import ray
        ray.init(address=ADDRESS)

        @ray.remote(num_cpus=1)
        class Holder:
            def ping(self):
                return "up"

        holders = [Holder.remote() for _ in range(2)]
        assert ray.get([h.ping.remote() for h in holders]) == ["up", "up"]
        print("HOLDING", flush=True)
        sys.stdin.readline()
        ray.kill(holders[0])
        print("KILLED", flush=True)
        sys.stdin.readline()
    """)
    try:
        expect(drv, "HOLDING", head)

        @ray.remote(num_cpus=1)
        def f():
            return "ran"

        ref = f.remote()
        ready, _ = ray.wait([ref], timeout=3)
        assert not ready, "the ray:// task ran while native actors held both CPUs"
        assert ray.available_resources().get("CPU", 0) == 0, ray.available_resources()
        send(drv, "kill")
        expect(drv, "KILLED", head)
        assert ray.get(ref) == "ran"
        finish(drv, head)
    finally:
        if drv.poll() is None:
            drv.kill()


def test_gpus_differ_across_worlds(head, client):
    ray = client

    @ray.remote(num_gpus=1)
    class G:
        def devices(self):
            import os
            return os.environ.get("CUDA_VISIBLE_DEVICES")

    g = G.remote()
    mine = ray.get(g.devices.remote())
    assert mine in ("0", "1"), mine
    out = finish(native_driver(head, """
        import ray
        ray.init(address=ADDRESS)

        @ray.remote(num_gpus=1)
        class G:
            def devices(self):
                return os.environ.get("CUDA_VISIBLE_DEVICES")

        g = G.remote()
        print("DEVICES", ray.get(g.devices.remote()), flush=True)
        print("AVAILABLE-GPU", ray.available_resources().get("GPU", 0), flush=True)
    """), head)
    theirs = [l.split()[1] for l in out.splitlines() if l.startswith("DEVICES ")]
    assert theirs and theirs[0] in ("0", "1") and theirs[0] != mine, (mine, out)
    ray.kill(g)


def test_one_node_id_in_both_worlds(head, client):
    ray = client

    @ray.remote
    def where():
        import ray
        return ray.get_runtime_context().get_node_id()

    mine = ray.get(where.remote())
    assert [n["NodeID"] for n in ray.nodes() if n["Alive"]] == [mine]
    out = finish(native_driver(head, """
        import ray
        ray.init(address=ADDRESS)

        @ray.remote
        def where():
            return ray.get_runtime_context().get_node_id()

        print("NODE", ray.get(where.remote()), flush=True)
        print("DRIVER", ray.get_runtime_context().get_node_id(), flush=True)
        print("NODES", *[n["NodeID"] for n in ray.nodes() if n["Alive"]], flush=True)
    """), head)
    words = {l.split()[0]: l.split()[1:] for l in out.splitlines() if l.split()}
    assert words["NODE"] == [mine] and words["DRIVER"] == [mine] and words["NODES"] == [mine], (mine, out)


def test_provider_shares_its_ledger_too(gray_bin):
    """A provider with --native runs a ray:// raylet and a native one on one
    machine: they share its ledger as the head's two do."""
    from native_pool import SecondNode

    head = NativePool(gray_bin, num_cpus=1, providers=True)
    node = None
    try:
        node = SecondNode(gray_bin, head, "quic")  # 2 CPUs, side=3

        class _P:
            address = "127.0.0.1:%d" % head.port
        gen = connected(_P)
        ray = next(gen)
        try:
            @ray.remote(num_cpus=1, resources={"side": 1})
            class Holder:
                def ping(self):
                    return "up"

            holders = [Holder.remote() for _ in range(2)]
            assert ray.get([h.ping.remote() for h in holders]) == ["up", "up"]
            drv = native_driver(head, """
                import ray
                ray.init(address=ADDRESS)

                @ray.remote(num_cpus=1, resources={"side": 1})
                def f():
                    return "ran"

                ref = f.remote()
                ready, _ = ray.wait([ref], timeout=3)
                print("NOT-READY" if not ready else "READY-TOO-EARLY", flush=True)
                sys.stdin.readline()
                print(ray.get(ref), flush=True)
                print("DONE", flush=True)
            """)
            try:
                line = drv.stdout.readline().strip()
                assert line == "NOT-READY", f"a native task ran on the provider's CPUs ray:// holds: {line!r}\n{node.logs()[-3000:]}"
                ray.kill(holders[0])
                send(drv, "go")
                expect(drv, "DONE", head)
                finish(drv, head)
            finally:
                if drv.poll() is None:
                    drv.kill()
        finally:
            next(gen, None)
    finally:
        if node is not None:
            node.stop()
        head.stop()
