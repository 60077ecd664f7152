package settlement

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gagliardetto/solana-go"
	bolt "go.etcd.io/bbolt"

	"github.com/gray-cluster/gray/billing/ledger"
	"github.com/gray-cluster/gray/internal/testlog"
)

// The tests run against a real Solana VM: testdata/svm_rpc.py serves
// JSON-RPC from LiteSVM (PyPI solders==0.29.0). Python is GRAY_SVM_PYTHON;
// else the first of GRAY_PYTHON, the repository's .venv and python3 that
// imports solders.litesvm; with none, the chain tests skip.

var (
	pythonOnce sync.Once
	pythonPath string
	pythonErr  error
)

func svmPython() (string, error) {
	pythonOnce.Do(func() {
		var cands []string
		if p := os.Getenv("GRAY_SVM_PYTHON"); p != "" {
			cands = append(cands, p)
		} else {
			if p := os.Getenv("GRAY_PYTHON"); p != "" { // set by make test-go
				cands = append(cands, p)
			}
			cands = append(cands, filepath.Join("..", "..", ".venv", "bin", "python"), "python3")
		}
		var msgs []string
		for _, c := range cands {
			path, err := exec.LookPath(c)
			if err != nil {
				msgs = append(msgs, fmt.Sprintf("%s: %v", c, err))
				continue
			}
			out, err := exec.Command(path, "-c", "import solders.litesvm").CombinedOutput()
			if err != nil {
				msgs = append(msgs, fmt.Sprintf("%s: import solders.litesvm: %v: %s", path, err, bytes.TrimSpace(out)))
				continue
			}
			pythonPath, _ = filepath.Abs(path)
			return
		}
		pythonErr = errors.New(strings.Join(msgs, "; "))
	})
	return pythonPath, pythonErr
}

// svm is a running testdata/svm_rpc.py.
type svm struct {
	t   *testing.T
	url string
	rpc *Client
}

func startSVM(t *testing.T) *svm {
	t.Helper()
	py, err := svmPython()
	if err != nil {
		t.Skipf("no Python with solders.litesvm (pip install solders==0.29.0 into .venv, or set GRAY_SVM_PYTHON): %v", err)
	}
	cmd := exec.Command(py, filepath.Join("testdata", "svm_rpc.py"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close() // the server exits when its stdin closes
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if stderr.Len() > 0 {
			t.Logf("svm_rpc.py stderr:\n%s", stderr.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- s
		io.Copy(io.Discard, stdout)
	}()
	select {
	case s := <-line:
		url, ok := strings.CutPrefix(strings.TrimSpace(s), "LISTENING ")
		if !ok {
			t.Fatalf("svm_rpc.py said %q; stderr: %s", s, stderr.String())
		}
		return &svm{t: t, url: url, rpc: NewClient(url)}
	case <-time.After(60 * time.Second):
		t.Fatalf("svm_rpc.py did not start; stderr: %s", stderr.String())
	}
	return nil
}

// call invokes a JSON-RPC method and decodes its result into out (if not
// nil).
func (v *svm) call(out any, method string, params ...any) {
	v.t.Helper()
	if params == nil {
		params = []any{}
	}
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	resp, err := http.Post(v.url, "application/json", bytes.NewReader(body))
	if err != nil {
		v.t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	var r struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		v.t.Fatalf("%s: decode: %v", method, err)
	}
	if r.Error != nil {
		v.t.Fatalf("%s: error %d: %s", method, r.Error.Code, r.Error.Message)
	}
	if out != nil {
		if err := json.Unmarshal(r.Result, out); err != nil {
			v.t.Fatalf("%s: decode result %s: %v", method, r.Result, err)
		}
	}
}

func (v *svm) airdrop(k solana.PublicKey, lamports uint64) {
	v.call(nil, "gray_airdrop", k.String(), lamports)
}

func (v *svm) expireBlockhash()              { v.call(nil, "gray_expireBlockhash") }
func (v *svm) dropSends(mode string, n int)  { v.call(nil, "gray_dropNextSend", mode, n) }
func (v *svm) setMint(mint solana.PublicKey) { v.call(nil, "gray_setUsdcMint", mint.String(), 6) }
func (v *svm) setTokens(owner, mint solana.PublicKey, amount uint64) {
	v.call(nil, "gray_setTokenAccount", owner.String(), mint.String(), amount)
}

type svmStats struct {
	Sends       int            `json:"sends"`
	Executed    int            `json:"executed"`
	BySignature map[string]int `json:"bySignature"`
}

func (v *svm) stats() svmStats {
	var s svmStats
	v.call(&s, "gray_stats")
	return s
}

func (v *svm) balance(k solana.PublicKey) uint64 {
	v.t.Helper()
	b, err := v.rpc.GetBalance(context.Background(), k)
	if err != nil {
		v.t.Fatal(err)
	}
	return b
}

// tokens is owner's USDC in its associated token account; exists is false
// when that account does not exist.
func (v *svm) tokens(owner solana.PublicKey) (amount uint64, exists bool) {
	v.t.Helper()
	ata, _, err := solana.FindAssociatedTokenAddress(owner, usdcMint)
	if err != nil {
		v.t.Fatal(err)
	}
	n, err := v.rpc.GetTokenAccountBalance(context.Background(), ata)
	if errors.Is(err, ErrAccountNotFound) {
		return 0, false
	}
	if err != nil {
		v.t.Fatal(err)
	}
	return n, true
}

// accountOwner is the program owning account k, zero if k does not exist.
func (v *svm) accountOwner(k solana.PublicKey) solana.PublicKey {
	var r struct {
		Value *struct {
			Owner solana.PublicKey `json:"owner"`
		} `json:"value"`
	}
	v.call(&r, "getAccountInfo", k.String(), map[string]string{"encoding": "base64"})
	if r.Value == nil {
		return solana.PublicKey{}
	}
	return r.Value.Owner
}

// usdcMint is mainnet's USDC mint address; the tests create it in LiteSVM.
var usdcMint = solana.MustPublicKeyFromBase58("EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v")

// env is one test's chain, payer, ledger and outbox file.
type env struct {
	t      *testing.T
	svm    *svm
	payer  solana.PrivateKey
	ledger *ledger.Ledger
	path   string // outbox file
	ob     *Outbox
	cfg    Config
}

// newEnv starts a chain with a payer holding payerSOL lamports and 100 USDC,
// a ledger crediting each of providers with 1,000 USD, and an outbox.
func newEnv(t *testing.T, payerSOL uint64, providers ...string) *env {
	t.Helper()
	v := startSVM(t)
	payer, err := solana.NewRandomPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	v.airdrop(payer.PublicKey(), payerSOL)
	v.setMint(usdcMint)
	v.setTokens(payer.PublicKey(), usdcMint, 100_000_000)
	dir := t.TempDir()
	l, err := ledger.Open(filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	for i, p := range providers {
		tx, err := ledger.Deposit("c"+p, 1_000_000_000, fmt.Sprintf("dep-%d", i), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		mustNil(t, l.Post(tx))
		tx, err = ledger.OpenEscrow("s"+p, "c"+p, 1_000_000_000, fmt.Sprintf("esc-%d", i), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		mustNil(t, l.Post(tx))
		tx, err = ledger.Charge("s"+p, p, 0, 1_000_000_000, fmt.Sprintf("chg-%d", i), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		mustNil(t, l.Post(tx))
	}
	e := &env{t: t, svm: v, payer: payer, ledger: l, path: filepath.Join(dir, "outbox.db")}
	e.cfg = Config{RPC: v.rpc, Payer: payer, USDCMint: usdcMint, Ledger: l,
		PollInterval: 10 * time.Millisecond, ResendInterval: 50 * time.Millisecond, ConfirmTimeout: 10 * time.Second,
		Interval: 20 * time.Millisecond, Logger: testlog.New(t)}
	e.open()
	return e
}

// open (re)opens the outbox file, as a restarted process would.
func (e *env) open() {
	e.t.Helper()
	ob, err := OpenOutbox(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	e.ob = ob
	e.t.Cleanup(func() {
		if err := ob.Check(); err != nil && !errors.Is(err, bolt.ErrDatabaseNotOpen) {
			e.t.Errorf("outbox invariants: %v", err)
		}
		ob.Close()
	})
}

// crash closes the outbox file, as a process dying would leave it.
func (e *env) crash() {
	e.t.Helper()
	mustNil(e.t, e.ob.Close())
}

func (e *env) settler(mod ...func(*Config)) *Settler {
	e.t.Helper()
	cfg := e.cfg
	for _, m := range mod {
		m(&cfg)
	}
	s, err := New(e.ob, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func wallet(t *testing.T) solana.PublicKey {
	t.Helper()
	k, err := solana.NewRandomPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.PublicKey()
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
