// Package settlement pays providers on Solana what the ledger says they are
// owed, in SOL or USDC, exactly once.
//
// It sits after billing/metering (usage records) and billing/ledger (the
// double-entry books): a Payout names a provider, a recipient wallet, an
// asset and an amount in base units (lamports, or USDC's 10⁻⁶). Planning a
// payout records it in a durable outbox (its own bucket in a bbolt file) and,
// when Owed > 0, moves Owed micro-USD in the ledger from
// ledger.Provider(provider) to ExternalPayouts, under the ledger transaction
// ID LedgerTxID(id), so money owed and money paid out stay in one set of
// books.
//
// A Settler turns planned payouts into Solana transactions: up to MaxBatch
// transfers of one asset to distinct recipients per transaction (USDC ones
// create the recipient's associated token account idempotently and use
// TransferChecked). Each transaction is an Attempt, keyed by its signature.
//
// # State machine
//
// A payout moves Planned → Signed → Sent → Confirmed, or ends Failed. An
// attempt moves Signed → Sent → Confirmed, or is retired as Expired or
// Failed:
//
//   - Planned: recorded (and debited in the ledger); no transaction yet.
//   - Signed: the transaction is built and signed, and its bytes, signature,
//     blockhash and lastValidBlockHeight are on disk. This happens BEFORE the
//     first send, so a crash at any later point leaves the exact bytes that
//     may have reached the chain.
//   - Sent: an RPC node accepted the bytes at least once.
//   - Confirmed: getSignatureStatuses reports the signature at the configured
//     commitment (finalized by default) without error.
//   - attempt Expired: the finalized block height passed the attempt's
//     lastValidBlockHeight and, checked after that, the signature is still
//     unknown (searchTransactionHistory): it can never land. Its payouts go
//     back to Planned and are rebuilt with a new blockhash as a new attempt.
//   - attempt Failed: the transaction landed (finalized) with an error, so
//     none of its transfers happened; its payouts go back to Planned.
//   - payout Failed: MaxAttempts attempts were retired; Retry re-plans it.
//     It keeps its ledger debit: the money is still owed to the provider
//     and sits in ExternalPayouts until the payout is retried (or an
//     operator reverses the debit).
//
// A batch whose transaction the node refused or that failed on chain may
// hold one bad payout; its members are marked Solo and sent alone after
// that, so one bad payout cannot keep sinking the others. Payouts the payer
// cannot afford (balance, fees, token-account rent, PayerReserve) are not
// attempted; they wait, Planned.
//
// # Exactly once
//
// A payout is in at most one live (Signed or Sent) attempt, and a new
// attempt is built only after every earlier one is proven dead (Expired or
// Failed). Every transition is a compare-and-set inside one bbolt
// transaction. Resending only ever sends the stored bytes, whose signature
// the chain deduplicates. On start, and on every pass, live attempts are
// checked with getSignatureStatuses first: landed ones are recorded without
// resending, unknown ones with a valid blockhash are resent as they are, and
// only expired-and-unknown ones are retired. So two different transactions
// for one payout never both land.
//
// Assumption: one RPC endpoint (or a set that agrees on finalized state); a
// node that reported a finalized block height but forgot a signature it had
// seen would break the expiry proof.
package settlement

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gagliardetto/solana-go"
)

// Asset is what a payout pays in.
type Asset string

// Supported assets.
const (
	SOL  Asset = "SOL"  // amounts in lamports
	USDC Asset = "USDC" // amounts in base units (10⁻⁶ USDC, one micro-USD)
)

// Payout is one payment to a provider. Its ID is the idempotency key: a
// payout ID is paid at most once, and planning it again with other contents
// fails with ErrIDConflict.
type Payout struct {
	// ID names the payout, e.g. "payout:<node>:<period>".
	ID string `json:"id"`
	// Provider is the provider's node id; its ledger account is
	// ledger.Provider(Provider).
	Provider string `json:"provider"`
	// Recipient is the provider's wallet (an ed25519 key on the curve). USDC
	// goes to its associated token account, created when missing.
	Recipient solana.PublicKey `json:"recipient"`
	Asset     Asset            `json:"asset"`
	// Amount is in base units: lamports for SOL, 10⁻⁶ USDC for USDC.
	Amount uint64 `json:"amount"`
	// Owed is the micro-USD moved in the ledger from ledger.Provider(Provider)
	// to ExternalPayouts when the payout is planned; 0 posts nothing.
	Owed int64 `json:"owed,omitempty"`
}

// ExternalPayouts is the ledger account that payouts move money to: the
// world outside the ledger that received it.
const ExternalPayouts = "external:payouts"

// LedgerTxID is the ID of the ledger transaction that debits payout id.
func LedgerTxID(id string) string { return "payout:" + id }

// Limits.
const (
	MaxIDLen       = 256
	MaxProviderLen = 200
	// MaxBatchLimit bounds transfers per transaction; 8 USDC transfers with
	// their CreateIdempotent instructions fit Solana's 1232-byte packet.
	MaxBatchLimit = 8
	// DefaultMaxLamports and DefaultMaxUSDC are the default ceilings on one
	// payout (10,000 SOL; 1,000,000 USDC). Larger amounts are refused as
	// absurd; Config can change them.
	DefaultMaxLamports uint64 = 10_000 * solana.LAMPORTS_PER_SOL
	DefaultMaxUSDC     uint64 = 1_000_000 * 1_000_000
	// DefaultMinLamports is the default floor of a SOL payout: the
	// rent-exempt minimum of a plain account. Less sent to a new wallet
	// fails on chain (InsufficientFundsForRent).
	DefaultMinLamports uint64 = 890_880
)

// Errors, always wrapped with detail; test with errors.Is.
var (
	// ErrInvalidPayout: a payout is malformed; the specific errors below
	// wrap it.
	ErrInvalidPayout = errors.New("settlement: invalid payout")
	// ErrInvalidID: empty, too long, not UTF-8 or with control characters.
	ErrInvalidID = fmt.Errorf("%w: bad id", ErrInvalidPayout)
	// ErrInvalidProvider: the provider id is not a usable ledger name.
	ErrInvalidProvider = fmt.Errorf("%w: bad provider", ErrInvalidPayout)
	// ErrInvalidRecipient: zero, off the ed25519 curve (a PDA or a token
	// account rather than a wallet), a program, or the payer itself.
	ErrInvalidRecipient = fmt.Errorf("%w: bad recipient", ErrInvalidPayout)
	// ErrUnknownAsset: neither SOL nor USDC (or USDC with no mint
	// configured).
	ErrUnknownAsset = fmt.Errorf("%w: unknown asset", ErrInvalidPayout)
	// ErrInvalidAmount: zero, above the asset's ceiling, or a bad Owed.
	ErrInvalidAmount = fmt.Errorf("%w: bad amount", ErrInvalidPayout)
	// ErrZeroAmount: Amount is 0. It also matches ErrInvalidAmount.
	ErrZeroAmount = fmt.Errorf("%w: zero", ErrInvalidAmount)
	// ErrAmountTooLarge: Amount is above the asset's ceiling. It also
	// matches ErrInvalidAmount.
	ErrAmountTooLarge = fmt.Errorf("%w: above the ceiling", ErrInvalidAmount)
	// ErrAmountTooSmall: a SOL Amount below the floor (by default the
	// rent-exempt minimum, which a transfer creating a new account needs).
	// It also matches ErrInvalidAmount.
	ErrAmountTooSmall = fmt.Errorf("%w: below the floor", ErrInvalidAmount)
	// ErrIDConflict: the payout ID was planned before with other contents;
	// nothing changed.
	ErrIDConflict = errors.New("settlement: payout id reused with different contents")
	// ErrNotFound: no payout with that ID.
	ErrNotFound = errors.New("settlement: no such payout")
	// ErrBadState: the operation does not apply in the payout's state.
	ErrBadState = errors.New("settlement: wrong state for operation")
	// ErrConfig: the Settler's Config is unusable.
	ErrConfig = errors.New("settlement: bad config")
	// ErrRPC: an RPC call failed (transport, or an error from the node).
	ErrRPC = errors.New("settlement: rpc")
	// ErrAccountNotFound: the RPC node has no such (token) account.
	ErrAccountNotFound = errors.New("settlement: account not found")
	// ErrCorrupt: the outbox holds something this package did not write, or
	// an invariant is broken.
	ErrCorrupt = errors.New("settlement: corrupt outbox")
	// errStale: a compare-and-set found the outbox changed under it.
	errStale = errors.New("settlement: outbox changed concurrently")
)

// programs that can never be a payout recipient.
var programIDs = []solana.PublicKey{
	solana.SystemProgramID, solana.TokenProgramID, solana.Token2022ProgramID,
	solana.SPLAssociatedTokenAccountProgramID, solana.ComputeBudget,
	solana.SysVarRentPubkey, solana.SysVarClockPubkey,
}

// limits are what validate checks against.
type limits struct {
	payer       solana.PublicKey
	mint        solana.PublicKey // zero: USDC disabled
	minLamports uint64
	maxLamports uint64
	maxUSDC     uint64
	hasLedger   bool
}

// validate checks p without reading the outbox or the chain.
func (l limits) validate(p Payout) error {
	if p.ID == "" || len(p.ID) > MaxIDLen || !utf8.ValidString(p.ID) || strings.IndexFunc(p.ID, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: %q (want 1 to %d bytes of UTF-8, no control characters)", ErrInvalidID, p.ID, MaxIDLen)
	}
	if p.Provider == "" || len(p.Provider) > MaxProviderLen || !utf8.ValidString(p.Provider) || strings.IndexFunc(p.Provider, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: payout %s: provider %q", ErrInvalidProvider, p.ID, p.Provider)
	}
	var ceiling uint64
	switch p.Asset {
	case SOL:
		ceiling = l.maxLamports
	case USDC:
		if l.mint.IsZero() {
			return fmt.Errorf("%w: payout %s: USDC, but no USDC mint is configured", ErrUnknownAsset, p.ID)
		}
		ceiling = l.maxUSDC
	default:
		return fmt.Errorf("%w: payout %s: %q (want %s or %s)", ErrUnknownAsset, p.ID, p.Asset, SOL, USDC)
	}
	switch {
	case p.Amount == 0:
		return fmt.Errorf("%w: payout %s", ErrZeroAmount, p.ID)
	case p.Asset == SOL && p.Amount < l.minLamports:
		return fmt.Errorf("%w: payout %s: %d lamports, floor %d", ErrAmountTooSmall, p.ID, p.Amount, l.minLamports)
	case p.Amount > ceiling:
		return fmt.Errorf("%w: payout %s: %d %s base units, ceiling %d", ErrAmountTooLarge, p.ID, p.Amount, p.Asset, ceiling)
	case p.Owed < 0:
		return fmt.Errorf("%w: payout %s: owed %d micro-USD is negative", ErrInvalidAmount, p.ID, p.Owed)
	case p.Owed > 0 && !l.hasLedger:
		return fmt.Errorf("%w: payout %s: owed %d micro-USD but the settler has no ledger", ErrInvalidAmount, p.ID, p.Owed)
	}
	switch r := p.Recipient; {
	case r.IsZero():
		return fmt.Errorf("%w: payout %s: zero key", ErrInvalidRecipient, p.ID)
	case r.Equals(l.payer):
		return fmt.Errorf("%w: payout %s: the payer itself", ErrInvalidRecipient, p.ID)
	case r.Equals(l.mint):
		return fmt.Errorf("%w: payout %s: the USDC mint", ErrInvalidRecipient, p.ID)
	case isProgram(r):
		return fmt.Errorf("%w: payout %s: %s is a program or sysvar", ErrInvalidRecipient, p.ID, r)
	case !solana.IsOnCurve(r[:]):
		return fmt.Errorf("%w: payout %s: %s is off the ed25519 curve (a program-derived or token account address, not a wallet)", ErrInvalidRecipient, p.ID, r)
	}
	return nil
}

func isProgram(k solana.PublicKey) bool {
	for _, p := range programIDs {
		if k.Equals(p) {
			return true
		}
	}
	return false
}
