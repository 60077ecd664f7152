package settlement

import (
	"fmt"

	"github.com/gagliardetto/solana-go"
	ata "github.com/gagliardetto/solana-go/programs/associated-token-account"
	computebudget "github.com/gagliardetto/solana-go/programs/compute-budget"
	"github.com/gagliardetto/solana-go/programs/system"
	"github.com/gagliardetto/solana-go/programs/token"
)

// Fee and size constants of the Solana runtime.
const (
	// LamportsPerSignature is the base fee per signature.
	LamportsPerSignature = 5_000
	// TokenAccountRent is the rent-exempt minimum of a 165-byte SPL token
	// account, which the payer funds when it creates a recipient's ATA.
	TokenAccountRent = 2_039_280
	// MaxTxSize is the largest wire-format transaction (one IPv6 packet's
	// payload).
	MaxTxSize = 1232
)

// compute units a transaction asks for when a priority fee is set.
const (
	cuBase    = 1_000
	cuPerSOL  = 500
	cuPerUSDC = 40_000
)

// txPlan describes a transaction to build.
type txPlan struct {
	asset   Asset
	payouts []Record
}

// computeUnits is the limit the transaction requests (only sent with a
// priority fee).
func (s *Settler) computeUnits(p txPlan) uint32 {
	if s.cfg.ComputeUnitLimit > 0 {
		return s.cfg.ComputeUnitLimit
	}
	per := uint32(cuPerSOL)
	if p.asset == USDC {
		per = cuPerUSDC
	}
	return cuBase + per*uint32(len(p.payouts))
}

// Fee is the most lamports the payer pays in fees for one transaction of n
// transfers of asset (excluding ATA rent): the signature fee plus the
// priority fee, ceil(price × limit / 10⁶).
func (s *Settler) fee(p txPlan) uint64 {
	f := uint64(LamportsPerSignature)
	if s.cfg.ComputeUnitPrice > 0 {
		f += (s.cfg.ComputeUnitPrice*uint64(s.computeUnits(p)) + 999_999) / 1_000_000
	}
	return f
}

// createIdempotent is the associated token account program's
// CreateIdempotent (instruction 1): solana-go only builds Create (0).
func createIdempotent(payer, wallet, mint solana.PublicKey) solana.Instruction {
	accounts := ata.NewCreateInstruction(payer, wallet, mint).Build().Accounts()
	return solana.NewInstruction(solana.SPLAssociatedTokenAccountProgramID, accounts, []byte{1})
}

// build makes and signs the transaction paying p's payouts with blockhash
// bh. It fails if the result exceeds MaxTxSize.
func (s *Settler) build(p txPlan, bh solana.Hash) (*solana.Transaction, []byte, error) {
	payer := s.cfg.Payer.PublicKey()
	var ixs []solana.Instruction
	if s.cfg.ComputeUnitPrice > 0 {
		ixs = append(ixs,
			computebudget.NewSetComputeUnitLimitInstruction(s.computeUnits(p)).Build(),
			computebudget.NewSetComputeUnitPriceInstruction(s.cfg.ComputeUnitPrice).Build())
	}
	switch p.asset {
	case SOL:
		for _, r := range p.payouts {
			ixs = append(ixs, system.NewTransferInstruction(r.Amount, payer, r.Recipient).Build())
		}
	case USDC:
		mint := s.cfg.USDCMint
		src, _, err := solana.FindAssociatedTokenAddress(payer, mint)
		if err != nil {
			return nil, nil, fmt.Errorf("settlement: payer's token account: %w", err)
		}
		for _, r := range p.payouts {
			dst, _, err := solana.FindAssociatedTokenAddress(r.Recipient, mint)
			if err != nil {
				return nil, nil, fmt.Errorf("settlement: payout %s: recipient's token account: %w", r.ID, err)
			}
			ixs = append(ixs,
				createIdempotent(payer, r.Recipient, mint),
				token.NewTransferCheckedInstruction(r.Amount, s.cfg.USDCDecimals, src, mint, dst, payer, nil).Build())
		}
	default:
		return nil, nil, fmt.Errorf("%w: %q", ErrUnknownAsset, p.asset)
	}
	tx, err := solana.NewTransaction(ixs, bh, solana.TransactionPayer(payer))
	if err != nil {
		return nil, nil, fmt.Errorf("settlement: build transaction: %w", err)
	}
	_, err = tx.Sign(func(k solana.PublicKey) *solana.PrivateKey {
		if k.Equals(payer) {
			return &s.cfg.Payer
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("settlement: sign transaction: %w", err)
	}
	raw, err := tx.MarshalBinary()
	if err != nil {
		return nil, nil, fmt.Errorf("settlement: encode transaction: %w", err)
	}
	if len(raw) > MaxTxSize {
		return nil, nil, fmt.Errorf("%w: transaction of %d transfers is %d bytes, limit %d", errTooLarge, len(p.payouts), len(raw), MaxTxSize)
	}
	return tx, raw, nil
}

var errTooLarge = fmt.Errorf("settlement: transaction too large")

// batches groups planned payouts of one asset, in order, into plans of at
// most max transfers to distinct recipients; Solo payouts go alone.
func batches(asset Asset, planned []Record, max int) []txPlan {
	var out []txPlan
	var rest []Record
	for _, r := range planned {
		if r.Solo {
			out = append(out, txPlan{asset: asset, payouts: []Record{r}})
		} else {
			rest = append(rest, r)
		}
	}
	for len(rest) > 0 {
		cur := txPlan{asset: asset}
		seen := map[solana.PublicKey]bool{}
		var next []Record
		for _, r := range rest {
			if len(cur.payouts) < max && !seen[r.Recipient] {
				seen[r.Recipient] = true
				cur.payouts = append(cur.payouts, r)
			} else {
				next = append(next, r)
			}
		}
		out = append(out, cur)
		rest = next
	}
	return out
}
