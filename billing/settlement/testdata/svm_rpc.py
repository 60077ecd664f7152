#!/usr/bin/env python3
"""A Solana JSON-RPC endpoint backed by LiteSVM, for the settlement tests.

It runs a real Solana VM (``solders.litesvm``, PyPI ``solders==0.29.0``) and
speaks just enough of the Solana JSON-RPC API for billing/settlement:

  getLatestBlockhash, getBlockHeight, sendTransaction, getSignatureStatuses,
  getBalance, getTokenAccountBalance, getAccountInfo

plus test-only methods, all prefixed ``gray_``:

  gray_airdrop [pubkey, lamports]          credit lamports
  gray_setUsdcMint [mint, decimals]        create an SPL Token mint account
  gray_setTokenAccount [owner, mint, amt]  create owner's associated token
                                           account holding amt; returns it
  gray_expireBlockhash []                  new blockhash; block height jumps
                                           past every lastValidBlockHeight
                                           handed out so far
  gray_dropNextSend [mode, count]          the next count (default 1; -1 =
                                           until cleared with count 0)
                                           sendTransaction calls misbehave:
                                           "drop": not executed, the
                                           signature is still returned (a
                                           transaction that never lands);
                                           "lose": executed, but the reply
                                           is an HTTP 503 (a lost response)
  gray_stats []                            {"sends", "executed",
                                            "bySignature": {sig: sends}}

Chain model: LiteSVM has no blocks, so this server keeps a block height that
grows by one per executed transaction. A blockhash is valid up to
lastValidBlockHeight = (height when it became latest) + 150, as on Solana;
gray_expireBlockhash moves past it. Executed transactions are reported
"finalized". sendTransaction runs preflight (a simulation) unless
skipPreflight is set; a failing preflight, a replayed signature
(AlreadyProcessed) or an unknown blockhash (BlockhashNotFound) get a
JSON-RPC error -32002 like a real node's, and nothing executes.

It listens on 127.0.0.1 (port from argv[1], default 0 = any free port),
prints "LISTENING http://127.0.0.1:<port>" on stdout, and exits when its
standard input closes, so a test that dies cannot leave it running.
"""

import base64
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from solders.litesvm import LiteSVM
from solders.account import Account
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token.associated import get_associated_token_address
from solders.token.state import Mint, TokenAccount, TokenAccountState
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
BLOCKHASH_VALIDITY = 150  # blocks, as on Solana
U64_MAX = 2**64 - 1


def describe(err):
    """Renders a transaction error the way a Solana node's messages do."""
    if err == "BlockhashNotFound":
        return "Blockhash not found"
    if err == "AlreadyProcessed":
        return "This transaction has already been processed"
    if isinstance(err, dict) and "InstructionError" in err:
        i, e = err["InstructionError"]
        if isinstance(e, dict) and "Custom" in e:
            e = f"custom program error: {e['Custom']:#x}"
        elif not isinstance(e, str):
            e = json.dumps(e)
        return f"Error processing Instruction {i}: {e}"
    return err if isinstance(err, str) else json.dumps(err)


class RPCError(Exception):
    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


class Chain:
    """LiteSVM plus the block-height bookkeeping; every method holds the lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.svm = LiteSVM()
        self.height = 1000
        self.blockhash_height = self.height
        self.slots = {}  # signature -> slot where it executed (or failed, included)
        self.sends = {}  # signature -> number of sendTransaction calls
        self.total_sends = 0
        self.executed = 0
        self.drop_mode = None
        self.drop_count = 0

    # -- helpers -------------------------------------------------------------

    def slot(self):
        return self.height  # one block per slot here

    def context(self):
        return {"slot": self.slot(), "apiVersion": "2.2.0"}

    def last_valid(self):
        return self.blockhash_height + BLOCKHASH_VALIDITY

    def expire(self):
        self.svm.expire_blockhash()
        self.height = max(self.height, self.last_valid()) + 1
        self.blockhash_height = self.height

    def new_block(self):
        self.height += 1
        if self.height > self.last_valid():
            self.expire()

    @staticmethod
    def err_json(err):
        # FailedTransactionMetadata.to_json() renders the error as Solana does.
        if isinstance(err, FailedTransactionMetadata):
            return json.loads(err.to_json())["err"]
        return str(err)

    # -- standard methods ----------------------------------------------------

    def getLatestBlockhash(self, params):
        return {"context": self.context(),
                "value": {"blockhash": str(self.svm.latest_blockhash()),
                          "lastValidBlockHeight": self.last_valid()}}

    def getBlockHeight(self, params):
        return self.height

    def sendTransaction(self, params):
        if not params or not isinstance(params[0], str):
            raise RPCError(-32602, "Invalid params: expected a base64 transaction")
        opts = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        if opts.get("encoding", "base58") != "base64":
            raise RPCError(-32602, "Invalid params: only base64 encoding is supported here")
        try:
            tx = VersionedTransaction.from_bytes(base64.b64decode(params[0]))
        except Exception as e:  # noqa: BLE001 - report any decode failure
            raise RPCError(-32602, f"invalid transaction: failed to deserialize: {e}")
        sig = tx.signatures[0]
        key = str(sig)
        self.total_sends += 1
        self.sends[key] = self.sends.get(key, 0) + 1

        mode = None
        if self.drop_count != 0:
            mode = self.drop_mode
            if self.drop_count > 0:
                self.drop_count -= 1
        if mode == "drop":
            return key  # accepted, forwarded, never lands

        if self.svm.get_transaction(sig) is not None:
            if mode == "lose":
                raise LostResponse()
            raise RPCError(-32002, "Transaction simulation failed: This transaction has already been processed",
                           {"err": "AlreadyProcessed", "logs": [], "accounts": None, "unitsConsumed": 0})
        if not opts.get("skipPreflight", False):
            sim = self.svm.simulate_transaction(tx)
            if isinstance(sim, FailedTransactionMetadata):
                err = self.err_json(sim)
                raise RPCError(-32002, f"Transaction simulation failed: {describe(err)}",
                               {"err": err, "logs": list(sim.meta().logs()), "accounts": None,
                                "unitsConsumed": sim.meta().compute_units_consumed()})
        res = self.svm.send_transaction(tx)
        if self.svm.get_transaction(sig) is not None:  # included, maybe with an error
            self.slots[key] = self.slot()
            self.executed += 1
            self.new_block()
        elif not opts.get("skipPreflight", False):  # preflight passed but it did not run
            err = self.err_json(res)
            raise RPCError(-32002, f"Transaction simulation failed: {describe(err)}", {"err": err, "logs": []})
        if mode == "lose":
            raise LostResponse()
        return key

    def getSignatureStatuses(self, params):
        sigs = params[0] if params else []
        if not isinstance(sigs, list) or len(sigs) > 256:
            raise RPCError(-32602, "Invalid params: expected at most 256 signatures")
        out = []
        for s in sigs:
            try:
                sig = Signature.from_string(s)
            except Exception:  # noqa: BLE001
                raise RPCError(-32602, f"Invalid param: {s!r} is not a signature")
            res = self.svm.get_transaction(sig) if s in self.slots else None
            if res is None:
                out.append(None)
                continue
            err = self.err_json(res) if isinstance(res, FailedTransactionMetadata) else None
            out.append({"slot": self.slots[s], "confirmations": None, "err": err,
                        "status": {"Err": err} if err is not None else {"Ok": None},
                        "confirmationStatus": "finalized"})
        return {"context": self.context(), "value": out}

    def getBalance(self, params):
        return {"context": self.context(), "value": self.svm.get_balance(pubkey(params, 0)) or 0}

    def getAccountInfo(self, params):
        acc = self.svm.get_account(pubkey(params, 0))
        if acc is None or (acc.lamports == 0 and not acc.data):
            return {"context": self.context(), "value": None}
        return {"context": self.context(),
                "value": {"data": [base64.b64encode(bytes(acc.data)).decode(), "base64"],
                          "executable": acc.executable, "lamports": acc.lamports,
                          "owner": str(acc.owner), "rentEpoch": acc.rent_epoch if acc.rent_epoch <= U64_MAX else U64_MAX,
                          "space": len(acc.data)}}

    def getTokenAccountBalance(self, params):
        addr = pubkey(params, 0)
        acc = self.svm.get_account(addr)
        if acc is None or acc.owner != TOKEN_PROGRAM or len(acc.data) != 165:
            raise RPCError(-32602, "Invalid param: could not find account")
        ta = TokenAccount.from_bytes(bytes(acc.data))
        mint = self.svm.get_account(ta.mint)
        decimals = Mint.from_bytes(bytes(mint.data)).decimals if mint is not None else 0
        ui = ta.amount / 10**decimals
        ui_str = str(ta.amount) if decimals == 0 else f"{ta.amount // 10**decimals}.{ta.amount % 10**decimals:0{decimals}d}".rstrip("0").rstrip(".")
        return {"context": self.context(),
                "value": {"amount": str(ta.amount), "decimals": decimals, "uiAmount": ui, "uiAmountString": ui_str}}

    # -- test-only methods ---------------------------------------------------

    def gray_airdrop(self, params):
        res = self.svm.airdrop(pubkey(params, 0), int(params[1]))
        if isinstance(res, FailedTransactionMetadata):
            raise RPCError(-32000, f"airdrop failed: {self.err_json(res)}")
        return str(res.signature())

    def gray_setUsdcMint(self, params):
        mint = pubkey(params, 0)
        decimals = int(params[1]) if len(params) > 1 else 6
        data = bytes(Mint(mint_authority=None, supply=0, decimals=decimals, is_initialized=True))
        self.svm.set_account(mint, Account(self.svm.minimum_balance_for_rent_exemption(len(data)), data, TOKEN_PROGRAM))
        return str(mint)

    def gray_setTokenAccount(self, params):
        owner, mint, amount = pubkey(params, 0), pubkey(params, 1), int(params[2])
        macc = self.svm.get_account(mint)
        if macc is None:
            raise RPCError(-32602, "unknown mint; call gray_setUsdcMint first")
        m = Mint.from_bytes(bytes(macc.data))
        ata = get_associated_token_address(owner, mint)
        old = self.svm.get_account(ata)
        old_amount = TokenAccount.from_bytes(bytes(old.data)).amount if old is not None and len(old.data) == 165 else 0
        data = bytes(TokenAccount(mint=mint, owner=owner, amount=amount, delegate=None,
                                  state=TokenAccountState.Initialized, is_native=None, delegated_amount=0))
        self.svm.set_account(ata, Account(self.svm.minimum_balance_for_rent_exemption(len(data)), data, TOKEN_PROGRAM))
        m2 = Mint(m.mint_authority, m.supply - old_amount + amount, m.decimals, True, m.freeze_authority)
        self.svm.set_account(mint, Account(macc.lamports, bytes(m2), TOKEN_PROGRAM))
        return str(ata)

    def gray_expireBlockhash(self, params):
        self.expire()
        return {"blockhash": str(self.svm.latest_blockhash()), "blockHeight": self.height}

    def gray_dropNextSend(self, params):
        mode = params[0] if params else "drop"
        if mode not in ("drop", "lose"):
            raise RPCError(-32602, f"unknown mode {mode!r}: want drop or lose")
        self.drop_mode = mode
        self.drop_count = int(params[1]) if len(params) > 1 else 1
        return True

    def gray_stats(self, params):
        return {"sends": self.total_sends, "executed": self.executed, "bySignature": dict(self.sends)}


class LostResponse(Exception):
    """The transaction was handled but the reply is lost (HTTP 503)."""


def pubkey(params, i):
    try:
        return Pubkey.from_string(params[i])
    except Exception:  # noqa: BLE001
        raise RPCError(-32602, f"Invalid param: WrongSize or not a public key at position {i}")


CHAIN = Chain()
METHODS = frozenset({
    "getLatestBlockhash", "getBlockHeight", "sendTransaction", "getSignatureStatuses",
    "getBalance", "getAccountInfo", "getTokenAccountBalance",
    "gray_airdrop", "gray_setUsdcMint", "gray_setTokenAccount", "gray_expireBlockhash",
    "gray_dropNextSend", "gray_stats",
})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        except Exception:  # noqa: BLE001
            self.reply(200, {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}})
            return
        rid, method, params = req.get("id"), req.get("method", ""), req.get("params") or []
        fn = getattr(CHAIN, method) if method in METHODS else None
        if fn is None:
            self.reply(200, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}})
            return
        try:
            with CHAIN.lock:
                result = fn(params)
        except LostResponse:
            self.reply(503, None)
            return
        except RPCError as e:
            err = {"code": e.code, "message": e.message}
            if e.data is not None:
                err["data"] = e.data
            self.reply(200, {"jsonrpc": "2.0", "id": rid, "error": err})
            return
        except Exception as e:  # noqa: BLE001
            self.reply(200, {"jsonrpc": "2.0", "id": rid, "error": {"code": -32603, "message": f"Internal error: {e!r}"}})
            return
        self.reply(200, {"jsonrpc": "2.0", "id": rid, "result": result})


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.daemon_threads = True
    print(f"LISTENING http://127.0.0.1:{srv.server_address[1]}", flush=True)

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    main()
