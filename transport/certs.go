package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	nodeValidity = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that a node whose clock runs a little
	// behind the head's still accepts a certificate minted a moment ago.
	clockSkew = 5 * time.Minute
)

// CA is the pool's certificate authority: an ECDSA P-256 key and its
// self-signed certificate. The head keeps it and signs node certificates;
// nodes only need its certificate (Pool) to verify each other.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA mints a CA named name, valid for ten years.
func NewCA(name string) (*CA, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty CA name", ErrInvalidConfig)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("transport: CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	cert, err := createCert(tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Pool returns a pool holding only the CA's certificate, for Config.CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssueNodeCert signs a certificate for pub with CommonName nodeID, usable
// for both server and client authentication, valid for one year. Use it when
// the node generated its own key (the private key never leaves the node);
// NewNodeCert does both steps at once.
func (ca *CA) IssueNodeCert(nodeID string, pub crypto.PublicKey) (*x509.Certificate, error) {
	if nodeID == "" {
		return nil, fmt.Errorf("%w: empty node id", ErrInvalidConfig)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: nodeID},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(nodeValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	return createCert(tmpl, ca.Cert, pub, ca.Key)
}

// NewNodeCert mints a fresh P-256 key and a certificate for it signed by the
// CA (see IssueNodeCert), ready for Config.Certificate.
func (ca *CA) NewNodeCert(nodeID string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: node key: %w", err)
	}
	cert, err := ca.IssueNodeCert(nodeID, &key.PublicKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// MarshalPEM encodes the CA's certificate and private key.
func (ca *CA) MarshalPEM() (certPEM, keyPEM []byte, err error) {
	keyPEM, err = EncodeKeyPEM(ca.Key)
	if err != nil {
		return nil, nil, err
	}
	return EncodeCertPEM(ca.Cert), keyPEM, nil
}

// ParseCA decodes a CA written by MarshalPEM.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := ParseCertsPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 || !certs[0].IsCA {
		return nil, fmt.Errorf("%w: want exactly one CA certificate, got %d", ErrInvalidConfig, len(certs))
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok || !ec.PublicKey.Equal(certs[0].PublicKey) {
		return nil, fmt.Errorf("%w: CA key does not match its certificate", ErrInvalidConfig)
	}
	return &CA{Cert: certs[0], Key: ec}, nil
}

// NodeCertPEM encodes a node certificate (chain and key) for storage; load it
// back with tls.X509KeyPair.
func NodeCertPEM(c tls.Certificate) (certPEM, keyPEM []byte, err error) {
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyPEM, err = EncodeKeyPEM(c.PrivateKey)
	return certPEM, keyPEM, err
}

// EncodeCertPEM encodes certificates as a PEM bundle.
func EncodeCertPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// EncodeKeyPEM encodes a private key as a PKCS #8 PEM block.
func EncodeKeyPEM(key crypto.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCertsPEM decodes every CERTIFICATE block in data.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no certificate in PEM data", ErrInvalidConfig)
	}
	return certs, nil
}

// ParseKeyPEM decodes the first PKCS #8 PRIVATE KEY block in data.
func ParseKeyPEM(data []byte) (crypto.PrivateKey, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("%w: no PRIVATE KEY in PEM data", ErrInvalidConfig)
		}
		if b.Type == "PRIVATE KEY" {
			key, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
			}
			return key, nil
		}
	}
}

// PoolFromPEM builds a CertPool from PEM certificates, for Config.CA on a
// node that holds only the CA's certificate.
func PoolFromPEM(data []byte) (*x509.CertPool, error) {
	certs, err := ParseCertsPEM(data)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p, nil
}

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("transport: serial: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("%w: sign certificate: %w", ErrInvalidConfig, err)
	}
	return x509.ParseCertificate(der)
}

// nodeIDOf is the node id a certificate names; errors.New keeps the message
// short inside TLS alerts.
func nodeIDOf(c *x509.Certificate) (string, error) {
	if c.Subject.CommonName == "" {
		return "", errors.New("certificate has no CommonName (node id)")
	}
	return c.Subject.CommonName, nil
}
