package settlement

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/gagliardetto/solana-go"
	bolt "go.etcd.io/bbolt"
)

// State is a payout's state.
type State string

// Payout states; see the package doc.
const (
	StatePlanned   State = "planned"
	StateSigned    State = "signed"
	StateSent      State = "sent"
	StateConfirmed State = "confirmed"
	StateFailed    State = "failed"
)

// AttemptState is an attempt's (one signed transaction's) state.
type AttemptState string

// Attempt states; see the package doc.
const (
	AttemptSigned    AttemptState = "signed"
	AttemptSent      AttemptState = "sent"
	AttemptConfirmed AttemptState = "confirmed"
	AttemptExpired   AttemptState = "expired" // blockhash expired, never landed
	AttemptFailed    AttemptState = "failed"  // landed with an error; nothing moved
)

// Live reports whether the attempt may still land.
func (s AttemptState) Live() bool { return s == AttemptSigned || s == AttemptSent }

// Record is a payout and where it stands.
type Record struct {
	Payout
	State State `json:"state"`
	// Debited: the ledger debit (if Owed > 0) is posted. Only debited
	// payouts are sent.
	Debited bool `json:"debited"`
	// Attempts lists every transaction built for the payout, oldest first;
	// Current is the live one (zero when none).
	Attempts []solana.Signature `json:"attempts,omitempty"`
	Current  solana.Signature   `json:"current"`
	// Tries counts attempts since the payout was planned or retried.
	Tries int `json:"tries"`
	// Solo: a batch holding this payout was refused or failed on chain, so
	// it is sent alone from then on and cannot sink other payouts again.
	Solo bool `json:"solo,omitempty"`
	// Signature and Slot: the transaction that paid it, once Confirmed.
	Signature solana.Signature `json:"signature"`
	Slot      uint64           `json:"slot,omitempty"`
	// Error: why the last attempt was retired, or why it Failed.
	Error     string    `json:"error,omitempty"`
	PlannedAt time.Time `json:"planned_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Attempt is one signed transaction paying one or more payouts of one asset.
// It is stored before it is first sent, and only its stored bytes are ever
// sent again.
type Attempt struct {
	Signature            solana.Signature `json:"signature"`
	Asset                Asset            `json:"asset"`
	PayoutIDs            []string         `json:"payouts"`
	Tx                   []byte           `json:"tx"` // wire format
	Blockhash            solana.Hash      `json:"blockhash"`
	LastValidBlockHeight uint64           `json:"last_valid_block_height"`
	State                AttemptState     `json:"state"`
	Sends                int              `json:"sends"` // send calls made, failed ones included
	LastSend             time.Time        `json:"last_send"`
	Slot                 uint64           `json:"slot,omitempty"`
	Error                string           `json:"error,omitempty"` // last send error, or why retired
	CreatedAt            time.Time        `json:"created_at"`
	UpdatedAt            time.Time        `json:"updated_at"`
}

// Outbox is the durable record of payouts and attempts: a bucket named
// "settlement" in a bbolt file.
type Outbox struct {
	db  *bolt.DB
	own bool
}

var (
	bRoot     = []byte("settlement")
	bPayouts  = []byte("payouts")  // id → JSON Record
	bAttempts = []byte("attempts") // base58 signature → JSON Attempt
	bMeta     = []byte("meta")     // "version" → schemaVersion
	bOpen     = []byte("open")     // id → "" for payouts neither Confirmed nor Failed
	bLive     = []byte("live")     // base58 signature → "" for live attempts
)

const schemaVersion = "1"

// OpenOutbox opens (creating if needed) the bbolt file at path and the
// outbox in it. Close closes the file. It fails after a second rather than
// wait while another process holds the file.
func OpenOutbox(path string) (*Outbox, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("settlement: open %s: %w", path, err)
	}
	o, err := NewOutbox(db)
	if err != nil {
		db.Close()
		return nil, err
	}
	o.own = true
	return o, nil
}

// NewOutbox uses the "settlement" bucket of an open bbolt database, creating
// it if needed. Close leaves db open.
func NewOutbox(db *bolt.DB) (*Outbox, error) {
	err := db.Update(func(tx *bolt.Tx) error {
		root, err := tx.CreateBucketIfNotExists(bRoot)
		if err != nil {
			return err
		}
		for _, name := range [][]byte{bPayouts, bAttempts, bMeta, bOpen, bLive} {
			if _, err := root.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := root.Bucket(bMeta)
		switch v := meta.Get([]byte("version")); {
		case v == nil:
			return meta.Put([]byte("version"), []byte(schemaVersion))
		case string(v) != schemaVersion:
			return fmt.Errorf("%w: schema version %q, want %q", ErrCorrupt, v, schemaVersion)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("settlement: outbox: %w", err)
	}
	return &Outbox{db: db}, nil
}

// Close closes the bbolt file if OpenOutbox opened it.
func (o *Outbox) Close() error {
	if o.own {
		return o.db.Close()
	}
	return nil
}

// Payout returns the record of payout id, and whether there is one.
func (o *Outbox) Payout(id string) (Record, bool, error) {
	var (
		r  Record
		ok bool
	)
	err := o.db.View(func(tx *bolt.Tx) error {
		var err error
		r, ok, err = getRecord(tx, id)
		return err
	})
	return r, ok, err
}

// Payouts returns every record, ordered by planning time then ID.
func (o *Outbox) Payouts() ([]Record, error) {
	var out []Record
	err := o.db.View(func(tx *bolt.Tx) error {
		return payouts(tx).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("%w: payout %s: %v", ErrCorrupt, k, err)
			}
			out = append(out, r)
			return nil
		})
	})
	sortRecords(out)
	return out, err
}

// Attempt returns the attempt with signature sig, and whether there is one.
func (o *Outbox) Attempt(sig solana.Signature) (Attempt, bool, error) {
	var (
		a  Attempt
		ok bool
	)
	err := o.db.View(func(tx *bolt.Tx) error {
		var err error
		a, ok, err = getAttempt(tx, sig)
		return err
	})
	return a, ok, err
}

// Attempts returns every attempt, oldest first.
func (o *Outbox) Attempts() ([]Attempt, error) {
	var out []Attempt
	err := o.db.View(func(tx *bolt.Tx) error {
		return attempts(tx).ForEach(func(k, v []byte) error {
			var a Attempt
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("%w: attempt %s: %v", ErrCorrupt, k, err)
			}
			out = append(out, a)
			return nil
		})
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

// live returns the attempts that may still land, oldest first.
func (o *Outbox) live() ([]Attempt, error) {
	var out []Attempt
	err := o.db.View(func(tx *bolt.Tx) error {
		return index(tx, bLive).ForEach(func(k, _ []byte) error {
			sig, err := solana.SignatureFromBase58(string(k))
			if err != nil {
				return fmt.Errorf("%w: live index: %v", ErrCorrupt, err)
			}
			a, ok, err := getAttempt(tx, sig)
			if err != nil || !ok || !a.State.Live() {
				return fmt.Errorf("%w: live index names attempt %s (found %v, %s): %v", ErrCorrupt, sig, ok, a.State, err)
			}
			out = append(out, a)
			return nil
		})
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

// open returns the payouts neither Confirmed nor Failed, ordered by
// planning time then ID.
func (o *Outbox) open() ([]Record, error) {
	var out []Record
	err := o.db.View(func(tx *bolt.Tx) error {
		return index(tx, bOpen).ForEach(func(k, _ []byte) error {
			r, ok, err := getRecord(tx, string(k))
			if err != nil || !ok || r.State == StateConfirmed || r.State == StateFailed {
				return fmt.Errorf("%w: open index names payout %s (found %v, %s): %v", ErrCorrupt, k, ok, r.State, err)
			}
			out = append(out, r)
			return nil
		})
	})
	sortRecords(out)
	return out, err
}

func sortRecords(rs []Record) {
	sort.SliceStable(rs, func(i, j int) bool {
		if !rs[i].PlannedAt.Equal(rs[j].PlannedAt) {
			return rs[i].PlannedAt.Before(rs[j].PlannedAt)
		}
		return rs[i].ID < rs[j].ID
	})
}

func payouts(tx *bolt.Tx) *bolt.Bucket            { return tx.Bucket(bRoot).Bucket(bPayouts) }
func attempts(tx *bolt.Tx) *bolt.Bucket           { return tx.Bucket(bRoot).Bucket(bAttempts) }
func index(tx *bolt.Tx, name []byte) *bolt.Bucket { return tx.Bucket(bRoot).Bucket(name) }

// setIndex adds key to (in) or removes it from (!in) an index bucket.
func setIndex(tx *bolt.Tx, name []byte, key string, in bool) error {
	if in {
		return index(tx, name).Put([]byte(key), []byte{})
	}
	return index(tx, name).Delete([]byte(key))
}

func getRecord(tx *bolt.Tx, id string) (Record, bool, error) {
	v := payouts(tx).Get([]byte(id))
	if v == nil {
		return Record{}, false, nil
	}
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		return Record{}, false, fmt.Errorf("%w: payout %s: %v", ErrCorrupt, id, err)
	}
	return r, true, nil
}

func putRecord(tx *bolt.Tx, r Record) error { return putJSON(payouts(tx), []byte(r.ID), r) }

func getAttempt(tx *bolt.Tx, sig solana.Signature) (Attempt, bool, error) {
	v := attempts(tx).Get([]byte(sig.String()))
	if v == nil {
		return Attempt{}, false, nil
	}
	var a Attempt
	if err := json.Unmarshal(v, &a); err != nil {
		return Attempt{}, false, fmt.Errorf("%w: attempt %s: %v", ErrCorrupt, sig, err)
	}
	return a, true, nil
}

func putAttempt(tx *bolt.Tx, a Attempt) error {
	return putJSON(attempts(tx), []byte(a.Signature.String()), a)
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	js, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, js)
}

// plan records p as Planned, or finds it already there. It returns the
// record and whether it was created now; a record with other contents is
// ErrIDConflict.
func (o *Outbox) plan(p Payout, now time.Time) (Record, bool, error) {
	var (
		r       Record
		created bool
	)
	err := o.db.Update(func(tx *bolt.Tx) error {
		old, ok, err := getRecord(tx, p.ID)
		if err != nil {
			return err
		}
		if ok {
			if old.Payout != p {
				return fmt.Errorf("%w: %s", ErrIDConflict, p.ID)
			}
			r = old
			return nil
		}
		r = Record{Payout: p, State: StatePlanned, Debited: p.Owed == 0, PlannedAt: now, UpdatedAt: now}
		created = true
		if err := setIndex(tx, bOpen, r.ID, true); err != nil {
			return err
		}
		return putRecord(tx, r)
	})
	return r, created, err
}

// markDebited notes that the ledger debit of id is posted.
func (o *Outbox) markDebited(id string, now time.Time) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		r, ok, err := getRecord(tx, id)
		if err != nil || !ok {
			return fmt.Errorf("%w: %s: %v", ErrNotFound, id, err)
		}
		r.Debited, r.UpdatedAt = true, now
		return putRecord(tx, r)
	})
}

// dropUndebited deletes id if it is Planned, undebited and never attempted:
// planning it failed, so it must leave no trace.
func (o *Outbox) dropUndebited(id string) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		r, ok, err := getRecord(tx, id)
		if err != nil || !ok {
			return err
		}
		if r.Debited || r.State != StatePlanned || len(r.Attempts) > 0 {
			return fmt.Errorf("%w: %s: undo planning in state %s", errStale, id, r.State)
		}
		if err := setIndex(tx, bOpen, id, false); err != nil {
			return err
		}
		return payouts(tx).Delete([]byte(id))
	})
}

// begin stores attempt a (state Signed) and moves its payouts from Planned
// to Signed, all or nothing. It fails with errStale if any payout is no
// longer Planned and debited: then nothing may be sent.
func (o *Outbox) begin(a Attempt) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		if _, ok, err := getAttempt(tx, a.Signature); err != nil || ok {
			return fmt.Errorf("%w: attempt %s already stored: %v", errStale, a.Signature, err)
		}
		for _, id := range a.PayoutIDs {
			r, ok, err := getRecord(tx, id)
			if err != nil {
				return err
			}
			if !ok || r.State != StatePlanned || !r.Debited || !r.Current.IsZero() || r.Asset != a.Asset {
				return fmt.Errorf("%w: payout %s is no longer planned", errStale, id)
			}
			r.State, r.Current, r.UpdatedAt = StateSigned, a.Signature, a.CreatedAt
			r.Attempts = append(r.Attempts, a.Signature)
			r.Tries++
			if err := putRecord(tx, r); err != nil {
				return err
			}
		}
		if err := setIndex(tx, bLive, a.Signature.String(), true); err != nil {
			return err
		}
		return putAttempt(tx, a)
	})
}

// markSent records a send of a live attempt: sendErr nil means the node
// accepted it (Signed → Sent, for it and its payouts).
func (o *Outbox) markSent(sig solana.Signature, sendErr error, now time.Time) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		a, ok, err := getAttempt(tx, sig)
		if err != nil || !ok || !a.State.Live() {
			return fmt.Errorf("%w: attempt %s not live: %v", errStale, sig, err)
		}
		a.Sends++
		a.LastSend, a.UpdatedAt = now, now
		if sendErr != nil {
			a.Error = sendErr.Error()
			return putAttempt(tx, a)
		}
		a.Error = ""
		if a.State == AttemptSent {
			return putAttempt(tx, a)
		}
		a.State = AttemptSent
		if err := o.eachPayout(tx, a, func(r *Record) { r.State = StateSent }, now); err != nil {
			return err
		}
		return putAttempt(tx, a)
	})
}

// confirm records that live attempt sig landed without error in slot.
func (o *Outbox) confirm(sig solana.Signature, slot uint64, now time.Time) ([]string, error) {
	var ids []string
	err := o.db.Update(func(tx *bolt.Tx) error {
		a, ok, err := getAttempt(tx, sig)
		if err != nil || !ok || !a.State.Live() {
			return fmt.Errorf("%w: attempt %s not live: %v", errStale, sig, err)
		}
		a.State, a.Slot, a.Error, a.UpdatedAt = AttemptConfirmed, slot, "", now
		err = o.eachPayout(tx, a, func(r *Record) {
			r.State, r.Signature, r.Slot, r.Current, r.Error = StateConfirmed, sig, slot, solana.Signature{}, ""
		}, now)
		if err != nil {
			return err
		}
		for _, id := range a.PayoutIDs {
			if err := setIndex(tx, bOpen, id, false); err != nil {
				return err
			}
		}
		if err := setIndex(tx, bLive, sig.String(), false); err != nil {
			return err
		}
		ids = a.PayoutIDs
		return putAttempt(tx, a)
	})
	return ids, err
}

// retire records that live attempt sig can never pay (state is
// AttemptExpired or AttemptFailed). Its payouts go back to Planned, or to
// Failed once they have had maxTries attempts; it returns the failed IDs.
func (o *Outbox) retire(sig solana.Signature, state AttemptState, reason string, maxTries int, now time.Time) ([]string, error) {
	var failed []string
	err := o.db.Update(func(tx *bolt.Tx) error {
		a, ok, err := getAttempt(tx, sig)
		if err != nil || !ok || !a.State.Live() {
			return fmt.Errorf("%w: attempt %s not live: %v", errStale, sig, err)
		}
		// A batch the node refused, or that failed on chain, may hold one bad
		// payout: its members go alone from now on.
		solo := len(a.PayoutIDs) > 1 && (state == AttemptFailed || a.Error != "")
		reason += lastErr(a.Error)
		a.State, a.Error, a.UpdatedAt = state, reason, now
		err = o.eachPayout(tx, a, func(r *Record) {
			r.Solo = r.Solo || solo
			r.Current, r.Error = solana.Signature{}, fmt.Sprintf("attempt %s %s: %s", sig, state, reason)
			r.State = StatePlanned
			if r.Tries >= maxTries {
				r.State = StateFailed
				failed = append(failed, r.ID)
			}
		}, now)
		if err != nil {
			return err
		}
		for _, id := range failed {
			if err := setIndex(tx, bOpen, id, false); err != nil {
				return err
			}
		}
		if err := setIndex(tx, bLive, sig.String(), false); err != nil {
			return err
		}
		return putAttempt(tx, a)
	})
	return failed, err
}

func lastErr(e string) string {
	if e == "" {
		return ""
	}
	return "; last send error: " + e
}

// retry moves a Failed payout back to Planned with a fresh count of tries.
// Its earlier attempts are all retired, so a new one cannot double pay.
func (o *Outbox) retry(id string, now time.Time) error {
	return o.db.Update(func(tx *bolt.Tx) error {
		r, ok, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if r.State != StateFailed {
			return fmt.Errorf("%w: retry %s: state %s, want %s", ErrBadState, id, r.State, StateFailed)
		}
		for _, s := range r.Attempts {
			if a, ok, err := getAttempt(tx, s); err != nil || !ok || a.State.Live() || a.State == AttemptConfirmed {
				return fmt.Errorf("%w: retry %s: attempt %s is %s", ErrCorrupt, id, s, a.State)
			}
		}
		r.State, r.Tries, r.UpdatedAt = StatePlanned, 0, now
		if err := setIndex(tx, bOpen, id, true); err != nil {
			return err
		}
		return putRecord(tx, r)
	})
}

// eachPayout applies f to every payout of attempt a, which must all have a
// as their live attempt.
func (o *Outbox) eachPayout(tx *bolt.Tx, a Attempt, f func(*Record), now time.Time) error {
	for _, id := range a.PayoutIDs {
		r, ok, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		if !ok || r.Current != a.Signature {
			return fmt.Errorf("%w: payout %s does not belong to live attempt %s", ErrCorrupt, id, a.Signature)
		}
		f(&r)
		r.UpdatedAt = now
		if err := putRecord(tx, r); err != nil {
			return err
		}
	}
	return nil
}
