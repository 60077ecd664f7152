package settlement

import (
	"fmt"

	"github.com/gagliardetto/solana-go"
	bolt "go.etcd.io/bbolt"
)

// Check verifies the outbox's invariants: the indexes match the records;
// every live attempt's payouts name it as their current attempt and every
// current attempt is live; every confirmed payout names a confirmed attempt
// that pays it; and no payout is in two confirmed attempts (paid twice).
// It returns the first violation, wrapping ErrCorrupt.
func (o *Outbox) Check() error {
	recs, err := o.Payouts()
	if err != nil {
		return err
	}
	atts, err := o.Attempts()
	if err != nil {
		return err
	}
	return o.db.View(func(tx *bolt.Tx) error {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
		}
		byRec := map[string]Record{}
		for _, r := range recs {
			byRec[r.ID] = r
			open := index(tx, bOpen).Get([]byte(r.ID)) != nil
			if open != (r.State != StateConfirmed && r.State != StateFailed) {
				return bad("payout %s in state %s, open index %v", r.ID, r.State, open)
			}
		}
		if n := index(tx, bOpen).Stats().KeyN; n > len(recs) {
			return bad("open index has %d keys for %d payouts", n, len(recs))
		}
		paid := map[string]solana.Signature{}
		byAtt := map[solana.Signature]Attempt{}
		nLive := 0
		for _, a := range atts {
			byAtt[a.Signature] = a
			live := index(tx, bLive).Get([]byte(a.Signature.String())) != nil
			if live != a.State.Live() {
				return bad("attempt %s in state %s, live index %v", a.Signature, a.State, live)
			}
			if live {
				nLive++
			}
			for _, id := range a.PayoutIDs {
				r, ok := byRec[id]
				switch {
				case !ok:
					return bad("attempt %s names unknown payout %s", a.Signature, id)
				case a.State.Live() && r.Current != a.Signature:
					return bad("live attempt %s pays %s, whose current attempt is %s", a.Signature, id, r.Current)
				case a.State == AttemptConfirmed && !paid[id].IsZero():
					return bad("payout %s paid twice: %s and %s", id, paid[id], a.Signature)
				case a.State == AttemptConfirmed:
					paid[id] = a.Signature
				}
			}
		}
		if n := index(tx, bLive).Stats().KeyN; n != nLive {
			return bad("live index has %d keys for %d live attempts", n, nLive)
		}
		for _, r := range recs {
			if !r.Current.IsZero() {
				if a, ok := byAtt[r.Current]; !ok || !a.State.Live() {
					return bad("payout %s's current attempt %s is not live", r.ID, r.Current)
				}
			}
			if (r.State == StateConfirmed) != !paid[r.ID].IsZero() || (r.State == StateConfirmed && paid[r.ID] != r.Signature) {
				return bad("payout %s in state %s with signature %s; confirmed attempt %s", r.ID, r.State, r.Signature, paid[r.ID])
			}
		}
		return nil
	})
}
