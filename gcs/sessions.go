package gcs

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
)

// SessionsTable is the Store table of the ray:// driver sessions that are
// open: one record per client id (the JSON of storedSession), written when
// the client's Init starts its job and deleted when the session ends, so
// that a head restarted within a client's reconnect grace period gives the
// reconnecting client its session back.
//
// SessionPayloadsTable keeps the function and actor class pickles those
// sessions uploaded (the stock client uploads each once and then names it
// by its object id): keys are the client id, '/', and the object id in hex.
const (
	SessionsTable        = "sessions"
	SessionPayloadsTable = "session_payloads"
)

// sessionRecordVersion is the layout of a stored session record.
const sessionRecordVersion = 1

// SessionRecord is one driver session as stored: what the client sent in
// its Init (namespace, runtime_env, reconnect grace period), the job it
// started and the account it authenticated as.
type SessionRecord struct {
	ClientID     string
	Account      string
	Job          ids.JobID
	Namespace    string
	RuntimeEnv   map[string]any
	Grace        time.Duration
	SubmissionID string
	Start        time.Time
	// Payloads are the session's uploaded function and class pickles
	// (filled by Load).
	Payloads []SessionPayload
}

// SessionPayload is one uploaded function or actor class pickle.
type SessionPayload struct {
	Object    ids.ObjectID
	ClientRef []byte
	SelfRefs  []string
	Data      []byte
}

type storedSession struct {
	V            int            `json:"v"`
	ClientID     string         `json:"client_id"`
	Account      string         `json:"account,omitempty"`
	Job          string         `json:"job"`
	Namespace    string         `json:"namespace"`
	RuntimeEnv   map[string]any `json:"runtime_env,omitempty"`
	GraceMS      int64          `json:"grace_ms"`
	SubmissionID string         `json:"submission_id,omitempty"`
	StartMS      int64          `json:"start_ms"`
}

type storedPayload struct {
	ClientRef []byte   `json:"client_ref,omitempty"`
	SelfRefs  []string `json:"self_refs,omitempty"`
	Data      []byte   `json:"data"`
}

// Sessions is the sessions table on a Store; a nil *Sessions, or one on no
// store, keeps nothing.
type Sessions struct{ store Store }

// NewSessionTable returns the sessions table kept in s (nil: nowhere).
func NewSessionTable(s Store) *Sessions { return &Sessions{store: s} }

func (t *Sessions) off() bool { return t == nil || t.store == nil }

func payloadPrefix(clientID string) []byte { return []byte(clientID + "/") }

// Put writes a session's record (its payloads are added with AddPayload).
func (t *Sessions) Put(ctx context.Context, r SessionRecord) error {
	if t.off() {
		return nil
	}
	v, err := json.Marshal(storedSession{
		V: sessionRecordVersion, ClientID: r.ClientID, Account: r.Account, Job: r.Job.Hex(),
		Namespace: r.Namespace, RuntimeEnv: r.RuntimeEnv, GraceMS: r.Grace.Milliseconds(),
		SubmissionID: r.SubmissionID, StartMS: r.Start.UnixMilli(),
	})
	if err != nil {
		return fmt.Errorf("sessions: encode %s: %w", r.ClientID, err)
	}
	if _, err := t.store.Apply(ctx, Put(SessionsTable, []byte(r.ClientID), v)); err != nil {
		return fmt.Errorf("sessions: store %s: %w", r.ClientID, err)
	}
	return nil
}

// AddPayload stores one uploaded pickle of a session.
func (t *Sessions) AddPayload(ctx context.Context, clientID string, p SessionPayload) error {
	if t.off() {
		return nil
	}
	v, err := json.Marshal(storedPayload{ClientRef: p.ClientRef, SelfRefs: p.SelfRefs, Data: p.Data})
	if err != nil {
		return fmt.Errorf("sessions: encode payload: %w", err)
	}
	key := append(payloadPrefix(clientID), p.Object.Hex()...)
	if _, err := t.store.Apply(ctx, Put(SessionPayloadsTable, key, v)); err != nil {
		return fmt.Errorf("sessions: store payload %s: %w", p.Object.Hex(), err)
	}
	return nil
}

// Delete removes a session's record and its payloads, atomically.
func (t *Sessions) Delete(ctx context.Context, clientID string) error {
	if t.off() {
		return nil
	}
	_, err := t.store.Apply(ctx, Delete(SessionsTable, []byte(clientID)),
		DeletePrefix(SessionPayloadsTable, payloadPrefix(clientID)))
	if err != nil {
		return fmt.Errorf("sessions: delete %s: %w", clientID, err)
	}
	return nil
}

// Load returns every stored session with its payloads, sorted by client
// id. Payloads whose session has no record (a crash between writes cannot
// leave any, but an older layout could) are skipped.
func (t *Sessions) Load(ctx context.Context) ([]SessionRecord, error) {
	if t.off() {
		return nil, nil
	}
	byID := map[string]*SessionRecord{}
	err := t.store.Scan(ctx, SessionsTable, nil, func(key, value []byte) error {
		var s storedSession
		if err := json.Unmarshal(value, &s); err != nil {
			return fmt.Errorf("%w: session record: %v", ErrCorrupt, err)
		}
		if s.V != sessionRecordVersion || s.ClientID != string(key) {
			return fmt.Errorf("%w: session record %q (version %d)", ErrCorrupt, key, s.V)
		}
		job, err := jobFromHex(s.Job)
		if err != nil {
			return fmt.Errorf("%w: session record job: %v", ErrCorrupt, err)
		}
		byID[s.ClientID] = &SessionRecord{
			ClientID: s.ClientID, Account: s.Account, Job: job, Namespace: s.Namespace, RuntimeEnv: s.RuntimeEnv,
			Grace: time.Duration(s.GraceMS) * time.Millisecond, SubmissionID: s.SubmissionID,
			Start: time.UnixMilli(s.StartMS),
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sessions: load: %w", err)
	}
	err = t.store.Scan(ctx, SessionPayloadsTable, nil, func(key, value []byte) error {
		k := string(key)
		cut := len(k) - 2*len(ids.ObjectID{}) - 1
		if cut <= 0 || k[cut] != '/' {
			return fmt.Errorf("%w: session payload key %q", ErrCorrupt, key)
		}
		r := byID[k[:cut]]
		if r == nil {
			return nil
		}
		oid, err := objectFromHex(k[cut+1:])
		if err != nil {
			return fmt.Errorf("%w: session payload key %q: %v", ErrCorrupt, key, err)
		}
		var p storedPayload
		if err := json.Unmarshal(value, &p); err != nil {
			return fmt.Errorf("%w: session payload: %v", ErrCorrupt, err)
		}
		r.Payloads = append(r.Payloads, SessionPayload{Object: oid, ClientRef: p.ClientRef, SelfRefs: p.SelfRefs, Data: p.Data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sessions: load payloads: %w", err)
	}
	out := make([]SessionRecord, 0, len(byID))
	for _, r := range byID {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out, nil
}

func jobFromHex(s string) (ids.JobID, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return ids.JobID{}, err
	}
	return ids.JobFromBytes(b)
}

func objectFromHex(s string) (ids.ObjectID, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return ids.ObjectID{}, err
	}
	return ids.ObjectFromBytes(b)
}
