package auth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Authenticator checks tokens against a Store and manages them.
type Authenticator struct {
	mode  Mode
	store Store
	now   func() time.Time
}

// New returns an Authenticator; store may be nil in Disabled mode.
func New(mode Mode, store Store) (*Authenticator, error) {
	if mode != Disabled && mode != Token {
		return nil, fmt.Errorf("%w: auth mode %q", ErrBadInput, mode)
	}
	if mode == Token && store == nil {
		return nil, fmt.Errorf("%w: token mode needs a token store", ErrBadInput)
	}
	return &Authenticator{mode: mode, store: store, now: time.Now}, nil
}

// Mode is the authentication mode.
func (a *Authenticator) Mode() Mode {
	if a == nil {
		return Disabled
	}
	return a.mode
}

// Enabled reports token mode.
func (a *Authenticator) Enabled() bool { return a.Mode() == Token }

// Authenticate returns the identity of a token. In Disabled mode every
// request is account "default" (not an operator: the HTTP middleware grants
// that to loopback peers).
func (a *Authenticator) Authenticate(token string) (Identity, error) {
	if !a.Enabled() {
		return Identity{Account: DefaultAccount}, nil
	}
	if strings.TrimSpace(token) == "" {
		return Identity{}, ErrMissing
	}
	id, hash, err := ParseToken(token)
	if err != nil {
		return Identity{}, err
	}
	rec, err := a.store.Get(id)
	if errors.Is(err, ErrNotFound) {
		return Identity{}, ErrInvalid
	}
	if err != nil {
		return Identity{}, fmt.Errorf("auth: token store: %w", err)
	}
	if !hashEqual(rec.Hash, hash) || !rec.Revoked.IsZero() {
		return Identity{}, ErrInvalid
	}
	return Identity{Account: rec.Account, Operator: rec.Operator, TokenID: rec.ID}, nil
}

// TokenInfo is what `gray token list` shows of a token.
type TokenInfo struct {
	ID       string    `json:"id"`
	Account  string    `json:"account"`
	Operator bool      `json:"operator,omitempty"`
	Created  time.Time `json:"created"`
	Revoked  time.Time `json:"revoked,omitzero"`
	Note     string    `json:"note,omitempty"`
}

// Create mints a token for account; the token is returned once and only
// its hash is kept.
func (a *Authenticator) Create(account string, operator bool, note string) (string, TokenInfo, error) {
	if a.store == nil {
		return "", TokenInfo{}, fmt.Errorf("%w: tokens need --auth-mode token", ErrBadInput)
	}
	if err := ValidAccount(account); err != nil {
		return "", TokenInfo{}, err
	}
	if len(note) > 200 {
		return "", TokenInfo{}, fmt.Errorf("%w: note longer than 200 bytes", ErrBadInput)
	}
	tok, id, hash, err := newToken()
	if err != nil {
		return "", TokenInfo{}, err
	}
	rec := Record{ID: id, Account: account, Operator: operator, Hash: hash, Created: a.now().UTC(), Note: note}
	if err := a.store.Put(rec); err != nil {
		return "", TokenInfo{}, fmt.Errorf("auth: token store: %w", err)
	}
	return tok, info(rec), nil
}

func info(r Record) TokenInfo {
	return TokenInfo{ID: r.ID, Account: r.Account, Operator: r.Operator, Created: r.Created, Revoked: r.Revoked, Note: r.Note}
}

// List returns every token's id, account and dates.
func (a *Authenticator) List() ([]TokenInfo, error) {
	if a.store == nil {
		return []TokenInfo{}, nil
	}
	recs, err := a.store.List()
	if err != nil {
		return nil, err
	}
	out := make([]TokenInfo, 0, len(recs))
	for _, r := range recs {
		out = append(out, info(r))
	}
	return out, nil
}

// Revoke makes a token invalid from now on (revoking twice is no error).
func (a *Authenticator) Revoke(id string) (TokenInfo, error) {
	if err := ValidTokenID(id); err != nil {
		return TokenInfo{}, err
	}
	if a.store == nil {
		return TokenInfo{}, ErrNotFound
	}
	rec, err := a.store.Get(id)
	if err != nil {
		return TokenInfo{}, err
	}
	if rec.Revoked.IsZero() {
		rec.Revoked = a.now().UTC()
		if err := a.store.Put(rec); err != nil {
			return TokenInfo{}, err
		}
	}
	return info(rec), nil
}

// OperatorTokenFile is the name of the operator token under the state dir.
const OperatorTokenFile = "operator.token"

// EnsureOperatorToken returns the operator token kept at path (0600),
// minting and writing one when the file is missing or its token no longer
// authenticates as an operator.
func (a *Authenticator) EnsureOperatorToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if id, err := a.Authenticate(tok); err == nil && id.Operator {
			return tok, nil
		}
	}
	tok, _, err := a.Create(OperatorAccount, true, "operator token of this head")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	return tok, os.Rename(tmp, path)
}

// Close closes the token store.
func (a *Authenticator) Close() error {
	if a == nil || a.store == nil {
		return nil
	}
	return a.store.Close()
}
