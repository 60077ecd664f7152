package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
)

// A token reads "gray_<id>_<secret>": id is 16 hex digits (what `gray token
// list` and revoke name), secret 64 hex digits (256 random bits). The head
// keeps only SHA-256(secret).
const (
	tokenPrefix = "gray_"
	idLen       = 16
	secretLen   = 64
	// TokenLen is the length of a token.
	TokenLen = len(tokenPrefix) + idLen + 1 + secretLen
)

// Header and cookie names of Ray's token authentication.
const (
	HeaderAuthorization    = "Authorization"
	HeaderRayAuthorization = "X-Ray-Authorization"
	CookieName             = "ray-authentication-token"
)

// newToken mints a token and returns it with its id and secret hash.
func newToken() (token, id string, hash [32]byte, err error) {
	buf := make([]byte, idLen/2+secretLen/2)
	if _, err := rand.Read(buf); err != nil {
		return "", "", hash, fmt.Errorf("auth: random: %w", err)
	}
	id = hex.EncodeToString(buf[:idLen/2])
	secret := hex.EncodeToString(buf[idLen/2:])
	return tokenPrefix + id + "_" + secret, id, sha256.Sum256([]byte(secret)), nil
}

// ParseToken splits a token into its id and the hash of its secret.
func ParseToken(tok string) (id string, hash [32]byte, err error) {
	tok = strings.TrimSpace(tok)
	if len(tok) != TokenLen || !strings.HasPrefix(tok, tokenPrefix) || tok[len(tokenPrefix)+idLen] != '_' {
		return "", hash, ErrInvalid
	}
	id = tok[len(tokenPrefix) : len(tokenPrefix)+idLen]
	secret := tok[len(tokenPrefix)+idLen+1:]
	if !isLowerHex(id) || !isLowerHex(secret) {
		return "", hash, ErrInvalid
	}
	return id, sha256.Sum256([]byte(secret)), nil
}

// ValidTokenID checks a token id as `gray token revoke` takes it.
func ValidTokenID(id string) error {
	if len(id) != idLen || !isLowerHex(id) {
		return fmt.Errorf("%w: token id %q: want %d hex digits", ErrBadInput, id, idLen)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// hashEqual compares two hashes in constant time.
func hashEqual(a, b [32]byte) bool { return subtle.ConstantTimeCompare(a[:], b[:]) == 1 }

// FromAuthorization reads the token of an Authorization value: "Bearer
// <token>" (scheme case-insensitive, as HTTP schemes are). Anything else
// carries no token.
func FromAuthorization(v string) (string, bool) {
	v = strings.TrimSpace(v)
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	rest = strings.TrimSpace(rest)
	return rest, rest != ""
}

// FromRequest finds a request's token as Ray's dashboard does: the
// Authorization header, then X-Ray-Authorization, then the
// ray-authentication-token cookie (the raw token). present reports that one
// of them was given at all: a header that is not "Bearer <token>" is an
// invalid token, not a missing one.
func FromRequest(r *http.Request) (token string, present bool) {
	for _, h := range []string{HeaderAuthorization, HeaderRayAuthorization} {
		if v := r.Header.Get(h); v != "" {
			tok, _ := FromAuthorization(v)
			return tok, true
		}
	}
	if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
		return strings.TrimSpace(c.Value), true
	}
	return "", false
}
