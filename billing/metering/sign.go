package metering

import (
	"crypto/ed25519"
	"errors"
	"fmt"
)

var (
	// ErrBadSignature: the signature does not match the record and key.
	ErrBadSignature = errors.New("metering: bad signature")
	// ErrBadKey: a public key is not an ed25519 public key.
	ErrBadKey = errors.New("metering: bad public key")
)

// SignedRecord is a usage record with its node's ed25519 signature over
// Record.CanonicalBytes().
type SignedRecord struct {
	Record UsageRecord `json:"record"`
	Sig    []byte      `json:"sig"`
}

// Sign signs rec with the node key priv. It panics, as ed25519.Sign does, if
// priv is not ed25519.PrivateKeySize bytes long. Signing does not validate
// rec; Verify does.
func Sign(rec UsageRecord, priv ed25519.PrivateKey) SignedRecord {
	return SignedRecord{Record: rec, Sig: ed25519.Sign(priv, rec.CanonicalBytes())}
}

// Verify checks that sr.Record is valid (ErrBadRecord) and that sr.Sig is
// pub's signature over its canonical encoding (ErrBadSignature). A pub of the
// wrong size gives ErrBadKey.
func Verify(sr SignedRecord, pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadKey, len(pub), ed25519.PublicKeySize)
	}
	if err := sr.Record.Validate(); err != nil {
		return err
	}
	if len(sr.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, sr.Record.CanonicalBytes(), sr.Sig) {
		return fmt.Errorf("%w: record %s", ErrBadSignature, sr.Record.ID)
	}
	return nil
}
