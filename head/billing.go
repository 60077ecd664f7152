package head

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gagliardetto/solana-go"

	"github.com/gray-cluster/gray/auth"
	"github.com/gray-cluster/gray/billing/accounting"
	"github.com/gray-cluster/gray/billing/ledger"
	"github.com/gray-cluster/gray/billing/settlement"
	"github.com/gray-cluster/gray/clientserver"
	"github.com/gray-cluster/gray/nodeserver"
)

// BillingConfig turns on metering, the ledger and (optionally) payouts.
type BillingConfig struct {
	// LedgerPath is the bbolt ledger file, or a redis:// URL for a ledger
	// several heads share ("" disables billing).
	LedgerPath string
	FeeBps     int
	// SessionBudget caps what one session's escrow takes (micro-USD).
	SessionBudget int64
	// SolanaRPC, PayerKeyPath (a solana-keygen JSON key) and USDCMint turn
	// on USDC payouts of provider balances every PayoutInterval.
	SolanaRPC      string
	PayerKeyPath   string
	USDCMint       string
	PayoutInterval time.Duration
	// MinPayout is the least balance paid out (micro-USD).
	MinPayout int64
}

type billing struct {
	ledger  *ledger.Ledger
	acct    *accounting.Accounting
	settler *settlement.Settler
	outbox  *settlement.Outbox
}

func (h *Head) startBilling(ctx context.Context) error {
	c := h.cfg.Billing
	if c.LedgerPath == "" {
		return nil
	}
	var l *ledger.Ledger
	var err error
	if strings.HasPrefix(c.LedgerPath, "redis://") || strings.HasPrefix(c.LedgerPath, "rediss://") {
		// Several heads (HA) can share one ledger in Redis.
		l, err = ledger.OpenRedis(ctx, c.LedgerPath, "")
	} else {
		if err := os.MkdirAll(filepath.Dir(c.LedgerPath), 0o700); err != nil {
			return err
		}
		l, err = ledger.Open(c.LedgerPath)
	}
	if err != nil {
		return fmt.Errorf("head: ledger: %w", err)
	}
	b := &billing{ledger: l, acct: accounting.New(accounting.Config{
		Ledger: l, FeeBps: c.FeeBps, SessionBudget: c.SessionBudget, Logger: h.log,
	})}
	h.billing = b
	if c.SolanaRPC == "" {
		return nil
	}
	payer, err := solana.PrivateKeyFromSolanaKeygenFile(c.PayerKeyPath)
	if err != nil {
		return fmt.Errorf("head: payer key: %w", err)
	}
	mint, err := solana.PublicKeyFromBase58(c.USDCMint)
	if err != nil {
		return fmt.Errorf("head: USDC mint: %w", err)
	}
	outbox := strings.TrimSuffix(c.LedgerPath, filepath.Ext(c.LedgerPath)) + "-payouts.db"
	if strings.Contains(c.LedgerPath, "://") {
		outbox = filepath.Join(h.cfg.StateDir, "payouts.db")
	}
	b.outbox, err = settlement.OpenOutbox(outbox)
	if err != nil {
		return err
	}
	b.settler, err = settlement.New(b.outbox, settlement.Config{
		RPC: settlement.NewClient(c.SolanaRPC), Payer: payer, USDCMint: mint, Ledger: l, Logger: h.log,
	})
	if err != nil {
		return err
	}
	interval := c.PayoutInterval
	if interval <= 0 {
		interval = time.Hour
	}
	go h.payoutLoop(ctx, interval)
	return nil
}

// payoutLoop plans a USDC payout of every provider balance above the
// minimum and settles; the outbox makes each payout land exactly once.
func (h *Head) payoutLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := h.PayOut(ctx); err != nil && ctx.Err() == nil {
			h.log.Warn("payouts", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PayOut plans payouts of provider balances and runs one settlement pass.
func (h *Head) PayOut(ctx context.Context) error {
	b := h.billing
	if b == nil || b.settler == nil {
		return errors.New("head: payouts are not configured")
	}
	balances, err := b.ledger.Balances()
	if err != nil {
		return err
	}
	cycle := time.Now().UTC().Format("20060102T150405")
	for account, bal := range balances {
		node, ok := strings.CutPrefix(account, "provider:")
		if !ok || bal < max(h.cfg.Billing.MinPayout, 1) {
			continue
		}
		addr := b.acct.PayoutAddress(node)
		to, err := solana.PublicKeyFromBase58(addr)
		if err != nil {
			h.log.Warn("provider has no valid payout address", "node", node, "address", addr)
			continue
		}
		p := settlement.Payout{ID: node + "@" + cycle, Provider: node, Recipient: to, Asset: settlement.USDC,
			Amount: uint64(bal), Owed: bal}
		if err := b.settler.Plan(ctx, p); err != nil {
			h.log.Warn("payout refused", "node", node, "err", err)
		}
	}
	_, err = b.settler.SettleOnce(ctx)
	return err
}

// BillingStatus is what `gray billing` shows.
type BillingStatus struct {
	Enabled  bool             `json:"enabled"`
	Balances map[string]int64 `json:"balances_micro_usd"`
	Payouts  []PayoutStatus   `json:"payouts,omitempty"`
}

// PayoutStatus is one payout's line.
type PayoutStatus struct {
	ID        string `json:"id"`
	Provider  string `json:"provider"`
	Recipient string `json:"recipient"`
	Asset     string `json:"asset"`
	Amount    uint64 `json:"amount"`
	State     string `json:"state"`
}

// Billing returns balances and payouts.
func (h *Head) Billing() (BillingStatus, error) {
	b := h.billing
	if b == nil {
		return BillingStatus{}, nil
	}
	bal, err := b.ledger.Balances()
	if err != nil {
		return BillingStatus{}, err
	}
	st := BillingStatus{Enabled: true, Balances: bal}
	if b.outbox != nil {
		ps, err := b.outbox.Payouts()
		if err != nil {
			return st, err
		}
		for _, p := range ps {
			st.Payouts = append(st.Payouts, PayoutStatus{ID: p.ID, Provider: p.Provider, Recipient: p.Recipient.String(),
				Asset: string(p.Asset), Amount: p.Amount, State: fmt.Sprint(p.State)})
		}
		sort.Slice(st.Payouts, func(i, j int) bool { return st.Payouts[i].ID < st.Payouts[j].ID })
	}
	return st, nil
}

// BillingEntry is one posting to an account, as `gray billing entries`
// shows it.
type BillingEntry struct {
	Seq     uint64    `json:"seq"`
	TxID    string    `json:"tx_id"`
	Amount  int64     `json:"amount_micro_usd"`
	Balance int64     `json:"balance_micro_usd"`
	Memo    string    `json:"memo"`
	At      time.Time `json:"at"`
}

// BillingEntries is an account's history, oldest first.
func (h *Head) BillingEntries(account string) ([]BillingEntry, error) {
	if h.billing == nil {
		return nil, errors.New("head: billing is not enabled (--ledger)")
	}
	ps, err := h.billing.ledger.Entries(account)
	if err != nil {
		return nil, err
	}
	es := make([]BillingEntry, 0, len(ps))
	for _, p := range ps {
		es = append(es, BillingEntry{Seq: p.Seq, TxID: p.TxID, Amount: p.Amount, Balance: p.Balance, Memo: p.Memo, At: p.At})
	}
	return es, nil
}

// Deposit credits a client account (micro-USD) from outside the ledger.
func (h *Head) Deposit(account string, amount int64, id string) error {
	if h.billing == nil {
		return errors.New("head: billing is not enabled (--ledger)")
	}
	tx, err := ledger.Deposit(account, amount, id, time.Now())
	if err != nil {
		return err
	}
	err = h.billing.ledger.Post(tx)
	if errors.Is(err, ledger.ErrDuplicate) && !errors.Is(err, ledger.ErrIDConflict) {
		return nil // the same deposit again: already done
	}
	return err
}

func (h *Head) billingHandlers(mux *http.ServeMux) {
	mux.HandleFunc("/api/gray/billing", func(w http.ResponseWriter, r *http.Request) {
		st, err := h.Billing()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if id, _ := auth.FromContext(r.Context()); !id.Operator {
			// A user sees only its own balance, and no payouts.
			st.Balances, st.Payouts = ownBalances(st.Balances, id.Account), nil
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.Handle("/api/gray/billing/deposit", auth.RequireOperator(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		amount, err := strconv.ParseInt(r.URL.Query().Get("micro_usd"), 10, 64)
		if err != nil || amount <= 0 {
			http.Error(w, "micro_usd must be a positive integer", http.StatusBadRequest)
			return
		}
		id := r.URL.Query().Get("id")
		if id == "" {
			id = fmt.Sprintf("deposit:%d", time.Now().UnixNano())
		}
		account := r.URL.Query().Get("account")
		if err := auth.ValidAccount(account); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := h.Deposit(account, amount, id); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})))
	mux.Handle("/api/gray/billing/entries", auth.RequireOperator(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		es, err := h.BillingEntries(r.URL.Query().Get("account"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(es)
	})))
	mux.Handle("/api/gray/billing/payout", auth.RequireOperator(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		if err := h.PayOut(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})))
}

// sessionBilling is the accounting the front end meters sessions with (nil
// when billing is off).
func (h *Head) sessionBilling() clientserver.SessionBilling {
	if h.billing == nil {
		return nil
	}
	return h.billing.acct
}

// nodeBilling is the accounting the node server meters providers with.
func (h *Head) nodeBilling() nodeserver.Billing {
	if h.billing == nil {
		return nil
	}
	return h.billing.acct
}
