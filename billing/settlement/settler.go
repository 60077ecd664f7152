package settlement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gagliardetto/solana-go"
	"github.com/gray-cluster/gray/billing/ledger"
)

// PayerReserve is the rent-exempt minimum of a plain system account: the
// payer keeps at least this many lamports, or its transactions fail.
const PayerReserve = 890_880

// Clock tells the time and waits; tests may inject their own.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config configures a Settler. Zero fields take the defaults named.
type Config struct {
	RPC   RPC               // required
	Payer solana.PrivateKey // required: pays fees, rent and SOL; owns the USDC source
	// USDCMint enables USDC payouts: the payer's associated token account
	// for it is the source. USDCDecimals is the mint's decimals (default 6).
	USDCMint     solana.PublicKey
	USDCDecimals uint8
	// Ledger, if set, is debited when payouts with Owed > 0 are planned.
	Ledger *ledger.Ledger
	// MaxBatch is the most transfers per transaction (default and maximum
	// MaxBatchLimit).
	MaxBatch int
	// MaxAttempts is how many attempts a payout gets before it is Failed
	// (default 5).
	MaxAttempts int
	// MaxLamports and MaxUSDC cap one payout (defaults DefaultMaxLamports,
	// DefaultMaxUSDC). MinLamports is the least SOL payout (default
	// DefaultMinLamports; set 1 to allow dust to wallets known to exist).
	MaxLamports, MaxUSDC, MinLamports uint64
	// ComputeUnitPrice, in micro-lamports, adds a priority fee (default 0:
	// none). ComputeUnitLimit overrides the estimated compute units.
	ComputeUnitPrice uint64
	ComputeUnitLimit uint32
	// Commitment at which a landed transaction counts (default Finalized;
	// Confirmed is allowed).
	Commitment Commitment
	// PollInterval is how often statuses are polled while waiting (default
	// 500ms); ResendInterval how often a live, unlanded attempt is resent
	// (default 2s); ConfirmTimeout how long SettleOnce waits for live
	// attempts before returning (default 90s; they stay live for the next
	// pass); Interval the pause between Run's passes (default 30s).
	PollInterval, ResendInterval, ConfirmTimeout, Interval time.Duration
	Clock                                                  Clock        // default: the real clock
	Logger                                                 *slog.Logger // default: slog.Default()
}

// Settler pays planned payouts. Its methods are safe for concurrent use;
// passes are serialized. Use one Settler per outbox (a second one would be
// safe, as every transition is a compare-and-set, but would waste work).
type Settler struct {
	ob    *Outbox
	cfg   Config
	rpc   RPC
	clock Clock
	log   *slog.Logger
	lim   limits
	mu    sync.Mutex
	hooks hooks
}

// hooks let tests stop a pass at a chosen point, as a crash would.
type hooks struct {
	afterSign func(Attempt) error        // after the attempt is stored, before its first send
	afterSend func(Attempt, error) error // after a send returns, before it is recorded
}

// Summary says what one pass did.
type Summary struct {
	Sent      int      // new transactions sent
	Resent    int      // sends of stored transactions
	Confirmed []string // payouts confirmed in this pass
	Retired   int      // attempts expired or failed on chain in this pass
	Failed    []string // payouts that became Failed in this pass
	Waiting   int      // planned payouts not sent for lack of payer funds
	Live      int      // attempts still live at the end
}

// New returns a Settler working on ob.
func New(ob *Outbox, cfg Config) (*Settler, error) {
	if ob == nil || cfg.RPC == nil {
		return nil, fmt.Errorf("%w: outbox and RPC are required", ErrConfig)
	}
	if len(cfg.Payer) != 64 || cfg.Payer.PublicKey().IsZero() {
		return nil, fmt.Errorf("%w: payer key missing or malformed", ErrConfig)
	}
	if !cfg.USDCMint.IsZero() && cfg.USDCDecimals == 0 {
		cfg.USDCDecimals = 6
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.PollInterval, 500*time.Millisecond)
	def(&cfg.ResendInterval, 2*time.Second)
	def(&cfg.ConfirmTimeout, 90*time.Second)
	def(&cfg.Interval, 30*time.Second)
	switch {
	case cfg.MaxBatch == 0:
		cfg.MaxBatch = MaxBatchLimit
	case cfg.MaxBatch < 0 || cfg.MaxBatch > MaxBatchLimit:
		return nil, fmt.Errorf("%w: MaxBatch %d not in [1, %d]", ErrConfig, cfg.MaxBatch, MaxBatchLimit)
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.MaxLamports == 0 {
		cfg.MaxLamports = DefaultMaxLamports
	}
	if cfg.MinLamports == 0 {
		cfg.MinLamports = DefaultMinLamports
	}
	if cfg.MaxUSDC == 0 {
		cfg.MaxUSDC = DefaultMaxUSDC
	}
	switch cfg.Commitment {
	case "":
		cfg.Commitment = Finalized
	case Confirmed, Finalized:
	default:
		return nil, fmt.Errorf("%w: commitment %q (want confirmed or finalized)", ErrConfig, cfg.Commitment)
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Settler{ob: ob, cfg: cfg, rpc: cfg.RPC, clock: cfg.Clock, log: cfg.Logger.With("component", "settlement"),
		lim: limits{payer: cfg.Payer.PublicKey(), mint: cfg.USDCMint, minLamports: cfg.MinLamports, maxLamports: cfg.MaxLamports,
			maxUSDC: cfg.MaxUSDC, hasLedger: cfg.Ledger != nil}}
	return s, nil
}

// Outbox is the settler's outbox.
func (s *Settler) Outbox() *Outbox { return s.ob }

// Payer is the paying wallet.
func (s *Settler) Payer() solana.PublicKey { return s.cfg.Payer.PublicKey() }

// Plan records p for payment and, when p.Owed > 0, debits the ledger. It is
// idempotent: planning the same payout again returns nil and changes
// nothing. Errors (wrapped): ErrInvalidPayout and the errors wrapping it for
// a malformed payout; ErrIDConflict when p.ID was planned with other
// contents; the ledger's errors (ledger.ErrInsufficientFunds, ...) when the
// debit fails. On any error the outbox and the ledger are as before.
func (s *Settler) Plan(ctx context.Context, p Payout) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.lim.validate(p); err != nil {
		return err
	}
	rec, created, err := s.ob.plan(p, s.clock.Now().UTC())
	if err != nil {
		return fmt.Errorf("settlement: plan %s: %w", p.ID, err)
	}
	if rec.Debited {
		if created {
			s.log.InfoContext(ctx, "payout planned", "payout", p.ID, "asset", p.Asset, "amount", p.Amount, "recipient", p.Recipient)
		}
		return nil
	}
	if posted, err := s.debit(ctx, rec); err != nil {
		// If the ledger took the debit, keep the record: the next pass
		// finishes it (the repeated post is a duplicate).
		if created && !posted {
			if derr := s.ob.dropUndebited(p.ID); derr != nil {
				return fmt.Errorf("settlement: plan %s: %w (and undoing it: %v)", p.ID, err, derr)
			}
		}
		return fmt.Errorf("settlement: plan %s: %w", p.ID, err)
	}
	s.log.InfoContext(ctx, "payout planned", "payout", p.ID, "asset", p.Asset, "amount", p.Amount, "recipient", p.Recipient, "owed_micro_usd", p.Owed)
	return nil
}

// debit posts the ledger transaction of rec (idempotent by its ID) and marks
// rec debited; posted says whether the ledger holds the debit.
func (s *Settler) debit(ctx context.Context, rec Record) (posted bool, err error) {
	if s.cfg.Ledger == nil {
		return false, fmt.Errorf("%w: payout %s owes %d micro-USD but the settler has no ledger", ErrConfig, rec.ID, rec.Owed)
	}
	t := ledger.Transaction{
		ID:      LedgerTxID(rec.ID),
		Entries: []ledger.Entry{{Account: ledger.Provider(rec.Provider), Amount: -rec.Owed}, {Account: ExternalPayouts, Amount: rec.Owed}},
		Memo:    fmt.Sprintf("payout %s: %d %s base units to %s", rec.ID, rec.Amount, rec.Asset, rec.Recipient),
		At:      rec.PlannedAt,
	}
	err = s.cfg.Ledger.Post(t)
	if err != nil && !(errors.Is(err, ledger.ErrDuplicate) && !errors.Is(err, ledger.ErrIDConflict)) {
		return false, fmt.Errorf("debit ledger: %w", err)
	}
	s.log.DebugContext(ctx, "ledger debited", "payout", rec.ID, "ledger_tx", t.ID, "micro_usd", rec.Owed)
	return true, s.ob.markDebited(rec.ID, s.clock.Now().UTC())
}

// Retry moves a Failed payout back to Planned, for a fresh MaxAttempts.
// Errors: ErrNotFound, ErrBadState when it is not Failed.
func (s *Settler) Retry(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ob.retry(id, s.clock.Now().UTC())
}

// Run settles until ctx ends, a pass every Interval, and returns ctx's
// error. Failed passes are logged and retried on the next tick.
func (s *Settler) Run(ctx context.Context) error {
	for {
		sum, err := s.SettleOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			s.log.ErrorContext(ctx, "settlement pass failed", "err", err)
		case sum.Sent+sum.Resent+len(sum.Confirmed)+sum.Retired > 0:
			s.log.InfoContext(ctx, "settlement pass", "sent", sum.Sent, "confirmed", len(sum.Confirmed),
				"retired", sum.Retired, "failed", len(sum.Failed), "waiting", sum.Waiting, "live", sum.Live)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.clock.After(s.cfg.Interval):
		}
	}
}

// SettleOnce makes one pass: it finishes interrupted ledger debits; checks
// every live attempt (recording landed ones, resending the stored bytes of
// unlanded ones whose blockhash is valid, retiring expired ones); builds,
// stores, signs and sends transactions for planned payouts; then polls until
// no attempt is live or ConfirmTimeout passes. Attempts still live stay for
// the next pass. RPC trouble while waiting is logged, not returned.
func (s *Settler) SettleOnce(ctx context.Context) (Summary, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sum Summary
	if err := s.finishDebits(ctx); err != nil {
		return sum, err
	}
	if _, err := s.advance(ctx, true, &sum); err != nil {
		return sum, err
	}
	if err := s.dispatch(ctx, &sum); err != nil {
		return sum, err
	}
	err := s.await(ctx, &sum)
	return sum, err
}

// finishDebits completes planning of payouts whose ledger debit was
// interrupted; those the ledger refuses are dropped, as Plan would have.
func (s *Settler) finishDebits(ctx context.Context) error {
	recs, err := s.ob.open()
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.State != StatePlanned || r.Debited {
			continue
		}
		if _, err := s.debit(ctx, r); err != nil {
			if errors.Is(err, ErrConfig) || errors.Is(err, ledger.ErrBadTransaction) ||
				errors.Is(err, ledger.ErrInsufficientFunds) || errors.Is(err, ledger.ErrAccountClosed) ||
				errors.Is(err, ledger.ErrOverflow) || errors.Is(err, ledger.ErrIDConflict) {
				s.log.WarnContext(ctx, "dropping payout whose planning was interrupted", "payout", r.ID, "err", err)
				if err := s.ob.dropUndebited(r.ID); err != nil && !errors.Is(err, errStale) {
					return err
				}
				continue
			}
			return fmt.Errorf("settlement: finish planning %s: %w", r.ID, err)
		}
	}
	return nil
}

// advance checks every live attempt once and returns how many stay live.
// The block height is read BEFORE the statuses: an attempt is retired only
// if its blockhash had expired by then and the chain still did not know it
// afterwards. resendAll resends every unlanded, unexpired attempt; otherwise
// only those not sent for ResendInterval.
func (s *Settler) advance(ctx context.Context, resendAll bool, sum *Summary) (int, error) {
	live, err := s.ob.live()
	if err != nil || len(live) == 0 {
		return 0, err
	}
	height, err := s.rpc.GetBlockHeight(ctx)
	if err != nil {
		return len(live), err
	}
	statuses := make([]*SignatureStatus, 0, len(live))
	for i := 0; i < len(live); i += 256 {
		chunk := live[i:min(i+256, len(live))]
		sigs := make([]solana.Signature, len(chunk))
		for j, a := range chunk {
			sigs[j] = a.Signature
		}
		st, err := s.rpc.GetSignatureStatuses(ctx, sigs)
		if err != nil {
			return len(live), err
		}
		if len(st) != len(sigs) {
			return len(live), fmt.Errorf("%w: %d statuses for %d signatures", ErrRPC, len(st), len(sigs))
		}
		statuses = append(statuses, st...)
	}
	remaining := 0
	for i, a := range live {
		st, now := statuses[i], s.clock.Now().UTC()
		var err error
		switch {
		case st != nil && st.Commitment.atLeast(s.cfg.Commitment) && st.Err == nil:
			var ids []string
			if ids, err = s.ob.confirm(a.Signature, st.Slot, now); err == nil {
				sum.Confirmed = append(sum.Confirmed, ids...)
				s.log.InfoContext(ctx, "payout transaction confirmed", "signature", a.Signature, "slot", st.Slot, "payouts", ids, "asset", a.Asset)
			}
		case st != nil && st.Commitment.atLeast(s.cfg.Commitment):
			err = s.retireAttempt(ctx, a, AttemptFailed, fmt.Sprintf("landed with error %v", st.Err), sum)
		case st != nil:
			remaining++ // landed, not yet at the commitment wanted
		case height > a.LastValidBlockHeight:
			err = s.retireAttempt(ctx, a, AttemptExpired,
				fmt.Sprintf("block height %d passed last valid height %d and the signature is unknown", height, a.LastValidBlockHeight), sum)
		default:
			remaining++
			if resendAll || now.Sub(a.LastSend) >= s.cfg.ResendInterval {
				sum.Resent++
				err = s.send(ctx, a)
			}
		}
		if errors.Is(err, errStale) {
			err = nil // resolved by someone else meanwhile
		}
		if err != nil {
			return remaining, err
		}
	}
	return remaining, nil
}

func (s *Settler) retireAttempt(ctx context.Context, a Attempt, state AttemptState, reason string, sum *Summary) error {
	failed, err := s.ob.retire(a.Signature, state, reason, s.cfg.MaxAttempts, s.clock.Now().UTC())
	if err != nil {
		return err
	}
	sum.Retired++
	sum.Failed = append(sum.Failed, failed...)
	s.log.WarnContext(ctx, "payout transaction retired", "signature", a.Signature, "state", state, "reason", reason,
		"payouts", a.PayoutIDs, "failed", failed)
	return nil
}

// send sends a stored attempt's bytes and records the send. A failed send
// is recorded, not returned: the attempt's fate is decided by its status
// and its blockhash's expiry, never by a send error.
func (s *Settler) send(ctx context.Context, a Attempt) error {
	sig, err := s.rpc.SendTransaction(ctx, a.Tx)
	if err == nil && sig != a.Signature {
		err = fmt.Errorf("%w: node returned signature %s for %s", ErrRPC, sig, a.Signature)
	}
	if s.hooks.afterSend != nil {
		if herr := s.hooks.afterSend(a, err); herr != nil {
			return herr
		}
	}
	if err != nil {
		s.log.WarnContext(ctx, "send failed; the attempt stays live until it lands or its blockhash expires",
			"signature", a.Signature, "payouts", a.PayoutIDs, "err", err)
	}
	if err := s.ob.markSent(a.Signature, err, s.clock.Now().UTC()); err != nil && !errors.Is(err, errStale) {
		return err // errStale: another settler resolved it meanwhile
	}
	return nil
}

// dispatch builds, stores and sends transactions for planned payouts that
// the payer can afford now.
func (s *Settler) dispatch(ctx context.Context, sum *Summary) error {
	recs, err := s.ob.open()
	if err != nil {
		return err
	}
	byAsset := map[Asset][]Record{}
	for _, r := range recs {
		if r.State == StatePlanned && r.Debited && r.Current.IsZero() {
			byAsset[r.Asset] = append(byAsset[r.Asset], r)
		}
	}
	if len(byAsset) == 0 {
		return nil
	}
	payer := s.Payer()
	lamports, err := s.rpc.GetBalance(ctx, payer)
	if err != nil {
		return err
	}
	f := funds{lamports: sub(lamports, PayerReserve)}
	if len(byAsset[USDC]) > 0 {
		src, _, err := solana.FindAssociatedTokenAddress(payer, s.cfg.USDCMint)
		if err != nil {
			return fmt.Errorf("settlement: payer's token account: %w", err)
		}
		if f.tokens, err = s.rpc.GetTokenAccountBalance(ctx, src); err != nil && !errors.Is(err, ErrAccountNotFound) {
			return err
		}
	}
	bh, err := s.rpc.GetLatestBlockhash(ctx)
	if err != nil {
		return err
	}
	for _, asset := range []Asset{SOL, USDC} {
		for _, p := range batches(asset, byAsset[asset], s.cfg.MaxBatch) {
			fit := s.afford(p, &f)
			if n := len(p.payouts) - len(fit.payouts); n > 0 {
				sum.Waiting += n
				s.log.WarnContext(ctx, "payer cannot afford payouts; they wait", "asset", asset, "count", n, "payer", payer)
			}
			if len(fit.payouts) > 0 {
				if err := s.start(ctx, fit, bh, sum); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// funds is what the payer has left to spend in this pass.
type funds struct{ lamports, tokens uint64 }

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

// afford trims p to the payouts f can pay for (assuming every USDC
// recipient needs its token account created) and takes their cost from f.
func (s *Settler) afford(p txPlan, f *funds) txPlan {
	for n := len(p.payouts); n > 0; n-- {
		q := txPlan{asset: p.asset, payouts: p.payouts[:n]}
		lamports, tokens := s.fee(q), uint64(0)
		for _, r := range q.payouts {
			if p.asset == SOL {
				lamports += r.Amount
			} else {
				lamports += TokenAccountRent
				tokens += r.Amount
			}
		}
		if lamports <= f.lamports && tokens <= f.tokens {
			f.lamports -= lamports
			f.tokens -= tokens
			return q
		}
	}
	return txPlan{asset: p.asset}
}

// start builds and signs p's transaction, stores it as a Signed attempt,
// and sends it. A transaction too large for a packet is split in two.
func (s *Settler) start(ctx context.Context, p txPlan, bh Blockhash, sum *Summary) error {
	tx, raw, err := s.build(p, bh.Hash)
	if errors.Is(err, errTooLarge) && len(p.payouts) > 1 {
		half := len(p.payouts) / 2
		if err := s.start(ctx, txPlan{asset: p.asset, payouts: p.payouts[:half]}, bh, sum); err != nil {
			return err
		}
		return s.start(ctx, txPlan{asset: p.asset, payouts: p.payouts[half:]}, bh, sum)
	}
	if err != nil {
		return err
	}
	now := s.clock.Now().UTC()
	a := Attempt{Signature: tx.Signatures[0], Asset: p.asset, Tx: raw, Blockhash: bh.Hash,
		LastValidBlockHeight: bh.LastValidBlockHeight, State: AttemptSigned, CreatedAt: now, UpdatedAt: now}
	for _, r := range p.payouts {
		a.PayoutIDs = append(a.PayoutIDs, r.ID)
	}
	if err := s.ob.begin(a); err != nil {
		if errors.Is(err, errStale) {
			s.log.WarnContext(ctx, "payouts changed while building; not sending", "err", err)
			return nil
		}
		return err
	}
	s.log.InfoContext(ctx, "payout transaction signed", "signature", a.Signature, "payouts", a.PayoutIDs,
		"asset", a.Asset, "last_valid_block_height", a.LastValidBlockHeight, "bytes", len(raw))
	if s.hooks.afterSign != nil {
		if err := s.hooks.afterSign(a); err != nil {
			return err
		}
	}
	sum.Sent++
	return s.send(ctx, a)
}

// await polls live attempts until none is left, ConfirmTimeout passes, or
// ctx ends.
func (s *Settler) await(ctx context.Context, sum *Summary) error {
	deadline := s.clock.Now().Add(s.cfg.ConfirmTimeout)
	for {
		live, err := s.ob.live()
		if err != nil {
			return err
		}
		sum.Live = len(live)
		if len(live) == 0 || !s.clock.Now().Before(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.clock.After(s.cfg.PollInterval):
		}
		if _, err := s.advance(ctx, false, sum); err != nil {
			if !errors.Is(err, ErrRPC) || ctx.Err() != nil {
				return err
			}
			s.log.WarnContext(ctx, "polling payout transactions", "err", err)
		}
	}
}
