package httpapi

import "context"

type accountKey struct{}

// WithAccount returns a context naming the account the request's jobs
// are billed to; an authenticating middleware sets it.
func WithAccount(ctx context.Context, account string) context.Context {
	return context.WithValue(ctx, accountKey{}, account)
}

// AccountFrom is the account WithAccount set ("" if none).
func AccountFrom(ctx context.Context) string {
	s, _ := ctx.Value(accountKey{}).(string)
	return s
}
