// Package auth is gray's client identity: tokens bound to accounts (kept
// hashed), the identity of a request in its context, the HTTP middleware of
// the status port and the token checks of the Ray Client port. It speaks
// Ray's own token authentication, so a stock client with RAY_AUTH_MODE=token
// and a token needs no change.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Mode is the pool's authentication mode, named as Ray names it.
type Mode string

const (
	// Disabled: no tokens; everyone is account "default".
	Disabled Mode = "disabled"
	// Token: every request carries a token bound to an account.
	Token Mode = "token"
)

// ParseMode reads --auth-mode.
func ParseMode(s string) (Mode, error) {
	switch Mode(strings.ToLower(strings.TrimSpace(s))) {
	case Disabled:
		return Disabled, nil
	case Token:
		return Token, nil
	}
	return "", fmt.Errorf("%w: auth mode %q (want token or disabled)", ErrBadInput, s)
}

// DefaultAccount is the account of every request when auth is disabled.
const DefaultAccount = "default"

// OperatorAccount is the account of the operator token the head creates.
const OperatorAccount = "operator"

var (
	// ErrMissing: the request carries no token.
	ErrMissing = errors.New("missing authentication token")
	// ErrInvalid: the token is malformed, unknown or revoked.
	ErrInvalid = errors.New("invalid authentication token")
	// ErrForbidden: the identity may not do this (not an operator).
	ErrForbidden = errors.New("operator token required")
	// ErrBadInput: a malformed argument (account name, token id).
	ErrBadInput = errors.New("bad input")
	// ErrNotFound: no such token id.
	ErrNotFound = errors.New("no such token")
)

// Identity is who a request acts for.
type Identity struct {
	// Account is the billing and isolation account (never client-chosen).
	Account string `json:"account"`
	// Operator may credit accounts, pay out and manage tokens.
	Operator bool `json:"operator"`
	// TokenID is the token that authenticated it ("" when auth is off).
	TokenID string `json:"token_id,omitempty"`
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity the middleware or interceptor attached.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// ValidAccount checks an account name: 1-64 of [A-Za-z0-9._@-], not
// starting with a dot (no colon, so no name reaches the ledger's own
// "provider:" or "escrow:" accounts).
func ValidAccount(a string) error {
	if a == "" || len(a) > 64 || a[0] == '.' {
		return fmt.Errorf("%w: account %q: want 1-64 of letters, digits and ._@-", ErrBadInput, a)
	}
	for _, c := range a {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '@' || c == '-'
		if !ok {
			return fmt.Errorf("%w: account %q: want 1-64 of letters, digits and ._@-", ErrBadInput, a)
		}
	}
	return nil
}
