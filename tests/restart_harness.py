"""The driver harness the head kill -9 tests share: a background driver
prints READY when its state is in place, the head is killed with SIGKILL,
the driver is signalled, the head restarted on the same state, and the
driver's output read to its end."""

import time


def run_across_restart(head, driver, signal, timeout=180, logs=lambda: "", ready=lambda before: None):
    """driver: a running driver process (text stdout, prints READY);
    signal: called after the kill, before the restart (touches the files
    the driver waits for). Returns (what the driver printed before READY,
    what it printed after, the wall clock of the kill); ready, if given, is
    called with what the driver printed before READY, before the kill (to
    wait for a state outside the driver). Fails with the
    driver's output and the head's log tail (plus logs()) if the driver
    exits before READY or with a non-zero code; kills it on any failure."""
    try:
        before = []
        for line in driver.stdout:
            if line.strip() == "READY":
                break
            before.append(line)
        else:
            driver.wait()
            raise AssertionError("driver exited (%s):\n%s" % (driver.returncode, "".join(before)))
        ready("".join(before))
        killed = time.time()
        head.kill9()
        signal()
        head.start()
        out, _ = driver.communicate(timeout=timeout)
        assert driver.returncode == 0, "driver failed (%d):\n%s\n--- head log tail ---\n%s\n%s" % (
            driver.returncode, out, head.logs()[-6000:], logs())
        return "".join(before), out, killed
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
