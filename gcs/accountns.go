package gcs

// AccountNamespacePrefix marks the KV namespaces of one account's KV: with
// token authentication each account's clients read and write their own
// internal KV (and runtime_env packages), stored under this prefix.
const AccountNamespacePrefix = "@gray-account/"

// AccountNamespace is the namespace ns of account's KV is stored under
// (ns itself for "", the one account of a pool without authentication).
func AccountNamespace(account string, ns []byte) []byte {
	if account == "" {
		return ns
	}
	out := make([]byte, 0, len(AccountNamespacePrefix)+len(account)+1+len(ns))
	out = append(out, AccountNamespacePrefix...)
	out = append(out, account...)
	out = append(out, '/')
	return append(out, ns...)
}
