package httpapi

import "context"

type accountKey struct{}

// viewer is who asks: the account jobs are billed to and seen by, and
// whether it may see every account's.
type viewer struct {
	account  string
	operator bool
}

// WithAccount returns a context naming the account the request acts for:
// its jobs are billed to it, and unless operator is set it sees and acts
// on that account's jobs only. An authenticating middleware sets it; a
// request without it (no authentication) sees every job.
func WithAccount(ctx context.Context, account string, operator bool) context.Context {
	return context.WithValue(ctx, accountKey{}, viewer{account: account, operator: operator})
}

// AccountFrom is the account WithAccount set ("" if none).
func AccountFrom(ctx context.Context) string {
	v, _ := ctx.Value(accountKey{}).(viewer)
	return v.account
}

// mayView reports whether the request may see a job of account owner.
func mayView(ctx context.Context, owner string) bool {
	v, ok := ctx.Value(accountKey{}).(viewer)
	return !ok || v.operator || (v.account != "" && v.account == owner)
}
