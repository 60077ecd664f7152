"""Billing end to end: a provider with prices runs a client's tasks, its
signed usage is charged to the client's session escrow in the head's ledger
(protocol fee included), a spent escrow refuses new work, and provider
balances are paid out as USDC transfers executed in a real Solana VM
(LiteSVM behind a small JSON-RPC endpoint)."""

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import Pool, Provider, ROOT, wait_for

solders = pytest.importorskip("solders.litesvm", reason="pip install solders==0.29.0 (CI installs it)")

SVM_RPC = os.path.join(ROOT, "billing", "settlement", "testdata", "svm_rpc.py")
USD = 1_000_000  # micro-USD


class SVM:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, SVM_RPC], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("LISTENING "), line
        self.url = line.split()[1]

    def call(self, method, *params):
        import urllib.request

        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            out = json.load(r)
        assert "error" not in out, out
        return out["result"]

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def gray(gray_bin, *args, env=None):
    """Runs the gray CLI (env: the environment of the head it calls, so
    that it finds that head's operator token)."""
    out = subprocess.run([gray_bin, *args], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def billed(gray_bin):
    from solders.keypair import Keypair

    svm = SVM()
    payer, mint, wallet = Keypair(), Keypair().pubkey(), Keypair().pubkey()
    svm.call("gray_airdrop", str(payer.pubkey()), 10_000_000_000)
    svm.call("gray_setUsdcMint", str(mint), 6)
    svm.call("gray_setTokenAccount", str(payer.pubkey()), str(mint), 1_000 * USD)
    key = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump(list(bytes(payer)), key)
    key.close()
    ledger = os.path.join(tempfile.mkdtemp(prefix="gray-ledger-"), "ledger.db")
    # Token mode: a session spends the account of its token.
    head = Pool(gray_bin, num_cpus=0, extra=[
        "--auth-mode", "token", "--ledger", ledger, "--fee-bps", "200", "--solana-rpc", svm.url, "--payer-key", key.name,
        "--usdc-mint", str(mint), "--payout-interval", "1h", "--min-payout", "0.000001",
    ])
    provider = None
    try:
        # 3600 USD per CPU-hour: one USD per CPU-second, easy to check.
        provider = Provider(gray_bin, head, num_cpus=2, extra=["--price", "CPU=3600", "--payout-address", str(wallet)])
        yield head, svm, mint, wallet
    finally:
        if provider:
            provider.stop()
        head.stop()
        svm.stop()


def billing(gray_bin, head):
    return json.loads(gray(gray_bin, "billing", "--json", "--address", "127.0.0.1:%d" % head.status_port,
                           env=getattr(head, "env", None)))


_tokens = {}


def account_token(gray_bin, head, account):
    """A token of account on head (created once, with the operator token the
    CLI finds on this machine)."""
    key = (head.status_port, getattr(head, "state_dir", None), account)
    if key not in _tokens:
        _tokens[key] = gray(gray_bin, "token", "create", "--address", "127.0.0.1:%d" % head.status_port,
                            "--account", account, env=getattr(head, "env", None)).strip()
    return _tokens[key]


def run_as(gray_bin, head, account, source, timeout=120):
    """Runs source in a stock client authenticated with a token of account."""
    env = dict(os.environ, GRAY_ADDRESS="ray://" + head.address, RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=account_token(gray_bin, head, account))
    prog = "import os, ray, time\nray.init(os.environ['GRAY_ADDRESS'])\n" + source
    return subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=timeout, env=env)


def test_usage_is_charged_and_paid_out_in_usdc(gray_bin, billed):
    head, svm, mint, wallet = billed
    status = "127.0.0.1:%d" % head.status_port
    gray(gray_bin, "billing", "deposit", "--address", status, "--account", "alice", "--usd", "20", "--id", "alice-1")
    # The same deposit id again changes nothing.
    gray(gray_bin, "billing", "deposit", "--address", status, "--account", "alice", "--usd", "20", "--id", "alice-1")
    assert billing(gray_bin, head)["balances_micro_usd"]["client:alice"] == 20 * USD

    out = run_as(gray_bin, head, "alice", (
        "@ray.remote(num_cpus=1)\n"
        "def f(i):\n"
        "    time.sleep(1)\n"
        "    return i\n"
        "print(sum(ray.get([f.remote(i) for i in range(3)])))\n"
    ))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("3")

    def settled():
        b = billing(gray_bin, head)["balances_micro_usd"]
        escrows = [k for k in b if k.startswith("escrow:")]
        providers = {k: v for k, v in b.items() if k.startswith("provider:")}
        # The session ended: its escrow went back to alice (balance 0).
        if escrows and all(b[k] == 0 for k in escrows) and providers and sum(providers.values()) > 0:
            return b
        return None

    b = wait_for(settled)
    provider_bal = sum(v for k, v in b.items() if k.startswith("provider:"))
    protocol = b.get("protocol", 0)
    spent = 20 * USD - b["client:alice"]
    assert sum(b.values()) == 0  # double entry: money only moved
    assert spent == provider_bal + protocol
    # Three one-second tasks at 1 USD per CPU-second.
    assert 3 * USD <= spent < 8 * USD
    # 2% fee, floored per record.
    assert abs(protocol - spent * 0.02) <= 10

    gray(gray_bin, "billing", "payout", "--address", status)
    after = billing(gray_bin, head)
    assert all(v == 0 for k, v in after["balances_micro_usd"].items() if k.startswith("provider:"))
    assert [p["state"] for p in after["payouts"]] == ["confirmed"] or all(
        "onfirm" in p["state"] for p in after["payouts"]), after["payouts"]
    from solders.pubkey import Pubkey
    from solders.token.associated import get_associated_token_address

    ata = get_associated_token_address(wallet, Pubkey.from_string(str(mint)))
    got = svm.call("getTokenAccountBalance", str(ata))
    assert int(got["value"]["amount"]) == provider_bal  # USDC base units are micro-USD

    # A second payout pass pays nothing twice.
    gray(gray_bin, "billing", "payout", "--address", status)
    got = svm.call("getTokenAccountBalance", str(ata))
    assert int(got["value"]["amount"]) == provider_bal


def test_spent_escrow_refuses_new_work(gray_bin, billed):
    head, _, _, _ = billed
    status = "127.0.0.1:%d" % head.status_port
    gray(gray_bin, "billing", "deposit", "--address", status, "--account", "bob", "--usd", "0.5")
    out = run_as(gray_bin, head, "bob", (
        "@ray.remote(num_cpus=1)\n"
        "def f():\n"
        "    time.sleep(1.5)\n"
        "    return 1\n"
        "print('first', ray.get(f.remote()))\n"
        "time.sleep(1)\n"
        "try:\n"
        "    ray.get(f.remote())\n"
        "    print('second ran')\n"
        "except Exception as e:\n"
        "    print('refused', type(e).__name__, e)\n"
    ))
    assert out.returncode == 0, out.stderr
    assert "first 1" in out.stdout
    assert "refused RuntimeError" in out.stdout and "spent its budget" in out.stdout, out.stdout


def test_bad_prices_are_refused(gray_bin, billed):
    head, _, _, _ = billed
    for bad in ["CPU=-1", "GPU=9999999999", "CPU=abc"]:
        with pytest.raises(RuntimeError) as info:
            Provider(gray_bin, head, num_cpus=1, extra=["--price", bad])
        assert "price" in str(info.value).lower()
