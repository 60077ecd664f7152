package clientserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gray-cluster/gray/gcs"
	"github.com/gray-cluster/gray/internal/ids"
)

// With token auth, each account has its own internal KV: a client's
// namespaces are stored under a prefix of its account, so that one tenant
// can neither read another's entries nor plant a runtime_env package under
// the content-hash name another tenant's client will look for (the client
// skips the upload when that name exists). With auth off there is one
// account and the KV is Ray's, shared with native drivers.

// scopeNamespace is the KV namespace a client's ns is stored under.
func scopeNamespace(account string, ns []byte) []byte { return gcs.AccountNamespace(account, ns) }

// kvAccount is the account whose KV a call reads and writes ("" with auth
// off, or for calls from inside the server). A call from a worker acts for
// the account of the job it runs; a worker with no job has none to act for
// and gets a KV of its own that nothing else uses.
func (s *Server) kvAccount(ctx context.Context) string {
	if !s.cfg.Auth.Enabled() {
		return ""
	}
	c, ok := callerFrom(ctx)
	if !ok {
		return ""
	}
	if c.workerID == "" {
		return c.id.Account
	}
	if job, ok := s.cfg.Node.WorkerJob(c.workerID); ok {
		if acct := s.jobAccount(job); acct != "" {
			return acct
		}
	}
	return "\x00worker-without-job"
}

// kvNS is scopeNamespace for the caller of ctx.
func (s *Server) kvNS(ctx context.Context, ns []byte) []byte {
	return scopeNamespace(s.kvAccount(ctx), ns)
}

// packageScope names the per-account directory packages are unpacked into
// ("" with auth off): a hash, so any account name makes a safe path.
func packageScope(account string) string {
	if account == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(account))
	return "acct-" + hex.EncodeToString(sum[:8])
}

// kvAccountOf is the account a session's KV and packages belong to (""
// with auth off).
func (s *Server) kvAccountOf(ss *session) string {
	if !s.cfg.Auth.Enabled() {
		return ""
	}
	if acct := s.accountOf(ss); acct != "" {
		return acct
	}
	return "\x00worker-without-job"
}

// foreignActorInfo refuses a lookup of the method table of an
// actor another account owns (a handle it was passed): that table is in
// the owner's KV, so the worker would otherwise wait for it in vain.
func (s *Server) foreignActorInfo(ctx context.Context, ns, key []byte) error {
	if !s.cfg.Auth.Enabled() || string(ns) != actorInfoNamespace {
		return nil
	}
	raw, err := hex.DecodeString(string(key))
	if err != nil {
		return nil
	}
	aid, err := ids.ActorFromBytes(raw)
	if err != nil {
		return nil
	}
	a, ok := s.cfg.Actors.Get(aid)
	if !ok || a.Account == s.kvAccount(ctx) {
		return nil
	}
	// NOT_FOUND, as for an actor that does not exist, is one the stock
	// client raises at once instead of retrying.
	return status.Errorf(codes.NotFound, "actor %s not found", aid.Hex())
}
