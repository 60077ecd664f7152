"""Billing with escrow across kill -9 of the head (issue 16): a token-auth
head with a ledger and one priced provider; alice's ray:// driver runs
billed tasks, its session's escrow has work charged to it when the head is
killed -9 (one task still running on the provider) and restarted on the
same state; the driver resumes its session and runs more tasks. Afterwards
the ledger balances (double entry), the escrow went back to alice, what
she spent is what the provider and the protocol fee got and covers every
task from before, across and after the restart, each charged once, and a
deposit replayed after the restart changes nothing. With a bbolt ledger in
the state directory and with the ledger (and the GCS tables) in Redis."""

import json
import os

from conftest import Provider, wait_for
from restart_harness import run_across_restart
from test_billing import USD, account_token, billing, gray
from test_head_jobs import JobsHead
from test_head_restart import redis_url, values  # noqa: F401 (redis_url is a fixture)

BEFORE_S, ACROSS_S, AFTER_S = 2, 4, 2  # task lengths (s); 1 USD per CPU-second

DRIVER = """
import os, time
import ray

ray.init(CLIENT)
print("job=" + ray.get_runtime_context().get_job_id(), flush=True)

@ray.remote(num_cpus=1)
def work(s, started=None):
    if started:
        open(started, "w").close()
    time.sleep(s)
    return s

print("before=%d" % sum(ray.get([work.remote(BEFORE_S) for _ in range(2)])), flush=True)
across = work.remote(ACROSS_S, STARTED)  # runs on the provider while the head is killed
while not os.path.exists(STARTED):
    time.sleep(0.05)
print("READY", flush=True)

while not os.path.exists(SIGNAL):  # the test has killed the head
    time.sleep(0.05)

print("across=%d" % ray.get(across, timeout=120), flush=True)
print("after=%d" % sum(ray.get([work.remote(AFTER_S) for _ in range(2)], timeout=120)), flush=True)
"""


def check_billing_across_restart(gray_bin, head, tmp_path):
    head.start()
    status = "127.0.0.1:%d" % head.status_port
    prov = Provider(gray_bin, head, num_cpus=2, extra=["--price", "CPU=3600"])
    try:
        gray(gray_bin, "billing", "deposit", "--address", status, "--account", "alice", "--usd", "20", "--id", "alice-1",
            env=head.env)
        assert billing(gray_bin, head)["balances_micro_usd"]["client:alice"] == 20 * USD
        token = account_token(gray_bin, head, "alice")
        signal = str(tmp_path / "signal")
        src = "SIGNAL, STARTED = %r, %r\nBEFORE_S, ACROSS_S, AFTER_S = %d, %d, %d\n" % (
            signal, str(tmp_path / "started"), BEFORE_S, ACROSS_S, AFTER_S) + DRIVER
        driver = head.client(src, env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
        escrow, seen = [], [None]

        def charged(before):
            # The session holds an escrow (all of alice's 20 USD) with the
            # two finished tasks charged to it.
            escrow.append("escrow:" + values(before)["job"])

            def done():
                b = seen[0] = billing(gray_bin, head)["balances_micro_usd"]
                return b.get("client:alice") == 0 and 0 < b.get(escrow[0], 0) <= (20 - 2 * BEFORE_S) * USD and b
            try:
                return wait_for(done, timeout=60)
            except AssertionError as e:
                raise AssertionError("%s: escrow %s, balances %s" % (e, escrow[0], seen[0])) from None

        printed, out, _ = run_across_restart(head, driver, lambda: open(signal, "w").close(), ready=charged,
                                             logs=prov.logs)
        after = values(out)
        assert values(printed)["before"] == str(2 * BEFORE_S), printed
        assert after["across"] == str(ACROSS_S) and after["after"] == str(2 * AFTER_S), out

        def settled():
            b = seen[0] = billing(gray_bin, head)["balances_micro_usd"]
            # The session ended: its escrow went back to alice.
            return b.get(escrow[0], 1) == 0 and b.get("client:alice", 0) > 0 and b

        try:
            b = wait_for(settled, timeout=60)
        except AssertionError as e:
            raise AssertionError("%s: escrow %s, balances %s" % (e, escrow[0], seen[0])) from None
        provider_bal = sum(v for k, v in b.items() if k.startswith("provider:"))
        protocol = b.get("protocol", 0)
        spent = 20 * USD - b["client:alice"]
        assert sum(b.values()) == 0, b  # double entry: money only moved
        assert b["external:deposits"] == -20 * USD, b  # one deposit, one escrow
        assert [k for k in b if k.startswith("escrow:")] == escrow, b  # the resumed session kept its escrow
        assert spent == provider_bal + protocol, b
        assert abs(protocol - spent * 0.02) <= 10, b  # 2% fee, floored per record
        # Every task is charged at least its length (1 USD per CPU-second):
        # those before, the one running across the kill, those after.
        lower = (2 * BEFORE_S + ACROSS_S + 2 * AFTER_S) * USD
        assert spent >= lower, (spent, lower, head.logs()[-4000:])
        # ... and once: the escrow's history is its opening (all of alice's
        # 20 USD, once), one or more usage records of each of the five tasks'
        # leases (each record charged once), and its refund.
        hist = json.loads(gray(gray_bin, "billing", "entries", escrow[0], "--json", "--address", status, env=head.env))
        job = escrow[0].split(":", 1)[1]
        assert [(e["tx_id"], e["amount_micro_usd"]) for e in hist[:1]] == [("escrow-open:" + job, 20 * USD)], hist
        assert [e["tx_id"] for e in hist[-1:]] == ["escrow-close:" + job], hist
        charges = hist[1:-1]
        records = [e["tx_id"].split(":", 1)[1].split("/") for e in charges]  # node, lease, seq
        assert all(e["tx_id"].startswith("usage:") and e["amount_micro_usd"] < 0 for e in charges), hist
        assert len({tuple(r) for r in records}) == len(records), hist
        assert len({lease for _, lease, _ in records}) == 5, hist
        assert -sum(e["amount_micro_usd"] for e in charges) == spent, hist
        assert "usage record refused" not in head.logs(), head.logs()[-4000:]

        # The deposit replayed after the restart changes nothing.
        gray(gray_bin, "billing", "deposit", "--address", status, "--account", "alice", "--usd", "20", "--id", "alice-1",
            env=head.env)
        assert billing(gray_bin, head)["balances_micro_usd"] == b
        return spent, lower
    finally:
        prov.stop()


def billed_head(gray_bin, storage=None, ledger=None):
    head = JobsHead(gray_bin, storage, extra=["--auth-mode", "token", "--fee-bps", "200"])
    head.cmd[head.cmd.index("--num-cpus") + 1] = "0"  # every task runs on the priced provider
    head.cmd += ["--ledger", ledger or os.path.join(head.state_dir, "ledger.db")]
    return head


def test_escrow_billing_survives_head_restart_bolt(gray_bin, tmp_path, capsys):
    head = billed_head(gray_bin)
    try:
        spent, lower = check_billing_across_restart(gray_bin, head, tmp_path)
        with capsys.disabled():
            print("\n[bolt] spent %.3f USD for %.0f USD of task time" % (spent / USD, lower / USD))
    finally:
        head.stop()


def test_escrow_billing_survives_head_restart_redis(gray_bin, tmp_path, capsys, redis_url):  # noqa: F811
    # The ledger's URL takes no namespace (its keys are gray:ledger:...).
    head = billed_head(gray_bin, storage=redis_url, ledger=redis_url.split("?", 1)[0])
    try:
        spent, lower = check_billing_across_restart(gray_bin, head, tmp_path)
        with capsys.disabled():
            print("\n[redis] spent %.3f USD for %.0f USD of task time" % (spent / USD, lower / USD))
    finally:
        head.stop()
