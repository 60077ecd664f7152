package transport

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"
)

func TestCertsPEMRoundTrip(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	certPEM, keyPEM, err := ca.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	node, err := ca2.NewNodeCert("0123abcd")
	if err != nil {
		t.Fatal(err)
	}
	ncert, nkey, err := NodeCertPEM(node)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := tls.X509KeyPair(ncert, nkey)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := PoolFromPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := loaded.Leaf
	if leaf.Subject.CommonName != "0123abcd" {
		t.Errorf("CN = %q", leaf.Subject.CommonName)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("validity %v, want about a year", d)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if err := verifyPeer(pool, []*x509.Certificate{leaf}, usage); err != nil {
			t.Errorf("verify for usage %v: %v", usage, err)
		}
	}
	if err := verifyPeer(newTestCA(t).Pool(), []*x509.Certificate{leaf}, x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("a certificate verified against another CA")
	}
}

func TestCertsErrors(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	if _, err := ca.NewNodeCert(""); err == nil {
		t.Error("NewNodeCert accepted an empty node id")
	}
	if _, err := NewCA(""); err == nil {
		t.Error("NewCA accepted an empty name")
	}
	certPEM, _, _ := ca.MarshalPEM()
	_, otherKey, _ := newTestCA(t).MarshalPEM()
	if _, err := ParseCA(certPEM, otherKey); err == nil {
		t.Error("ParseCA accepted a key that does not match the certificate")
	}
	if _, err := PoolFromPEM([]byte("not pem")); err == nil {
		t.Error("PoolFromPEM accepted garbage")
	}
}
