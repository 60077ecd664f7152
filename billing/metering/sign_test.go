package metering

import (
	"crypto/ed25519"
	"errors"
	"math"
	"testing"
	"time"
)

// key derives a deterministic node key from a name.
func key(name string) (ed25519.PublicKey, ed25519.PrivateKey) {
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, name)
	priv := ed25519.NewKeyFromSeed(seed)
	return priv.Public().(ed25519.PublicKey), priv
}

func TestSignVerify(t *testing.T) {
	pub, priv := key("node-1")
	otherPub, otherPriv := key("node-2")
	good := rec("GPU", 0.5, t0, t0.Add(time.Minute))
	signed := Sign(good, priv)
	resign := func(f func(*UsageRecord)) SignedRecord { r := good; f(&r); return Sign(r, priv) }
	tamper := func(f func(*UsageRecord)) SignedRecord { s := signed; f(&s.Record); return s }

	tests := []struct {
		name string
		sr   SignedRecord
		pub  ed25519.PublicKey
		want error
	}{
		{"ok", signed, pub, nil},
		{"wrong key", signed, otherPub, ErrBadSignature},
		{"forged by other node", Sign(good, otherPriv), pub, ErrBadSignature},
		{"no signature", SignedRecord{Record: good}, pub, ErrBadSignature},
		{"short signature", SignedRecord{Record: good, Sig: signed.Sig[:10]}, pub, ErrBadSignature},
		{"flipped bit", SignedRecord{Record: good, Sig: flip(signed.Sig)}, pub, ErrBadSignature},
		{"amount changed", tamper(func(r *UsageRecord) { r.Amount = 1 }), pub, ErrBadSignature},
		{"end extended", tamper(func(r *UsageRecord) { r.End = r.End.Add(time.Hour) }), pub, ErrBadSignature},
		{"start moved", tamper(func(r *UsageRecord) { r.Start = r.Start.Add(-time.Nanosecond) }), pub, ErrBadSignature},
		{"job changed", tamper(func(r *UsageRecord) { r.JobID = "job-2" }), pub, ErrBadSignature},
		{"resource changed", tamper(func(r *UsageRecord) { r.Resource = "GPU:H100" }), pub, ErrBadSignature},
		{"zone changed only", tamper(func(r *UsageRecord) { r.End = r.End.In(time.FixedZone("x", 7200)) }), pub, nil},
		{"bad key size", signed, pub[:31], ErrBadKey},
		{"end before start", resign(func(r *UsageRecord) { r.End = r.Start.Add(-time.Second) }), pub, ErrBadRecord},
		{"zero length", resign(func(r *UsageRecord) { r.End = r.Start }), pub, ErrBadRecord},
		{"zero amount", resign(func(r *UsageRecord) { r.Amount = 0 }), pub, ErrBadRecord},
		{"negative amount", resign(func(r *UsageRecord) { r.Amount = -0.5 }), pub, ErrBadRecord},
		{"NaN amount", resign(func(r *UsageRecord) { r.Amount = math.NaN() }), pub, ErrBadRecord},
		{"Inf amount", resign(func(r *UsageRecord) { r.Amount = math.Inf(1) }), pub, ErrBadRecord},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.sr, tt.pub)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Verify() = %v, want %v", err, tt.want)
			}
		})
	}
}

func flip(b []byte) []byte {
	c := append([]byte(nil), b...)
	c[len(c)/2] ^= 1
	return c
}
