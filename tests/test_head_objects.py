"""Objects on providers survive a head restart for the driver that resumes
its session: a stock ray:// driver connected while the head is killed -9
and restarted gets the results its tasks left on a provider (a 2 MiB value
and a small one), and the results of its tasks that were still running on
the provider at the kill, one finishing while the head is down and one
after the restart; each of those ran once. A ray.put object, which lived
only in the head's store, is ObjectLostError. With the default bbolt store
and with Redis."""

from conftest import Provider, wait_for
from restart_harness import run_across_restart
from test_head_failover import FailoverHead
from test_head_restart import redis_url, values  # noqa: F401 (redis_url is a fixture)

DRIVER = """
import os, time
import ray
from ray.exceptions import ObjectLostError

ray.init(CLIENT, namespace="objects")

@ray.remote(num_cpus=0, resources={"ftnode": 1})
def big(n):
    return b"x" * n

@ray.remote(num_cpus=0, resources={"ftnode": 1})
def small():
    return "small value"

@ray.remote(num_cpus=0, resources={"ftnode": 1})
def slow(name, release, size):
    with open(RUNLOG, "a") as f:
        f.write(name + "\\n")
    while not os.path.exists(release):
        time.sleep(0.05)
    return name.encode() * size

big_ref, small_ref = big.remote(2 << 20), small.remote()
ready, _ = ray.wait([big_ref, small_ref], num_returns=2, timeout=120)
assert len(ready) == 2
# Finishes while the head is down (the test releases it), a result of 3 MiB.
down_ref = slow.remote("down", RELEASE_DOWN, 3 << 20)
# Finishes after the restart (this driver releases it), a small result.
after_ref = slow.remote("after", RELEASE_AFTER, 4)
while True:
    try:
        with open(RUNLOG) as f:
            if len(f.read().split()) == 2:
                break
    except FileNotFoundError:
        pass
    time.sleep(0.05)
put_ref = ray.put("lived on the head")
print("READY", flush=True)

while not os.path.exists(SIGNAL):  # the test has killed the head
    time.sleep(0.05)

value = ray.get(big_ref, timeout=120)
print("first_get_at=%f" % time.time(), flush=True)
print("big_after=%s" % (value == b"x" * (2 << 20)))
print("small_after=" + ray.get(small_ref, timeout=120))
value = ray.get(down_ref, timeout=120)
print("down_after=%s" % (value == b"down" * (3 << 20)))
open(RELEASE_AFTER, "w").close()
print("after_after=" + ray.get(after_ref, timeout=120).decode())
try:
    ray.get(put_ref, timeout=60)
    print("put_after=value")
except ObjectLostError as e:
    print("put_after=" + type(e).__name__)
print("new_task=%d" % len(ray.get(big.remote(5), timeout=120)))
"""


def check_objects(head, tmp_path, capsys):
    head.start()
    prov = Provider(head.cmd[0], head, num_cpus=2, extra=["--resources", '{"ftnode": 2}'])
    signal, runlog = tmp_path / "signal", tmp_path / "runlog"
    release_down, release_after = tmp_path / "release-down", tmp_path / "release-after"
    prelude = "SIGNAL = %r\nRUNLOG = %r\nRELEASE_DOWN = %r\nRELEASE_AFTER = %r\n" % (
        str(signal), str(runlog), str(release_down), str(release_after))
    driver = head.client(prelude + DRIVER)

    def signal_driver():
        release_down.touch()  # this task ends while no head is there
        signal.touch()

    try:
        _, out, killed = run_across_restart(head, driver, signal_driver, timeout=240,
                                            logs=lambda: "--- provider ---\n" + prov.logs()[-4000:])
        after = values(out)
        pause = float(after.pop("first_get_at")) - killed
        assert after == {
            "big_after": "True", "small_after": "small value", "down_after": "True", "after_after": "afterafterafterafter",
            "put_after": "ObjectLostError", "new_task": "5",
        }, (after, head.logs()[-4000:])
        # Nothing ran twice.
        assert sorted(runlog.read_text().split()) == ["after", "down"]
        assert "objects a restored provider holds are found again" in head.logs()
        with capsys.disabled():
            print("\n[%s] kill -9 -> resumed driver's get of a provider-held 2 MiB result done %.2fs" % (head.storage, pause))
    finally:
        prov.stop()


def test_provider_objects_found_after_restart_bolt(gray_bin, tmp_path, capsys):
    head = FailoverHead(gray_bin)
    try:
        check_objects(head, tmp_path, capsys)
    finally:
        head.stop()


def test_provider_objects_found_after_restart_redis(gray_bin, tmp_path, capsys, redis_url):  # noqa: F811
    head = FailoverHead(gray_bin, storage=redis_url)
    try:
        check_objects(head, tmp_path, capsys)
    finally:
        head.stop()


def test_unclaimed_objects_dropped_on_provider(gray_bin, tmp_path):
    """Objects of a session that ended before the restart are claimed by
    no one: the reconnected provider is told to drop them."""
    head = FailoverHead(gray_bin)
    try:
        head.start()
        prov = Provider(head.cmd[0], head, num_cpus=1, extra=["--resources", '{"ftnode": 1}'])
        try:
            head.run("""
import ray
ray.init(CLIENT)
@ray.remote(resources={"ftnode": 1})
def big():
    return b"z" * (2 << 20)
assert len(ray.get(big.remote())) == 2 << 20
""")
            wait_for(lambda: "session ended; its record is deleted" in head.logs(), timeout=60, every=0.05)
            head.kill9()
            head.start()
            wait_for(lambda: "objects returned to the restarted head" in prov.logs(), timeout=60, every=0.1)
            line = [ln for ln in prov.logs().splitlines() if "objects returned to the restarted head" in ln][-1]
            assert "held=0" in line and "dropped=0" not in line, line
        finally:
            prov.stop()
    finally:
        head.stop()
