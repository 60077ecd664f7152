package provider

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"

	pb "github.com/gray-cluster/gray/proto/nodepb"
	"github.com/gray-cluster/gray/transport"
)

// Join trades a join token for a node certificate: a fresh P-256 key, a
// certificate-less QUIC transport that trusts the head's CA only by the
// token's pin, and the Join RPC. It returns the certificate (with its key
// and parsed leaf, whose CommonName is the node id) and the pool CA.
func Join(ctx context.Context, headAddr, token, hostname string, log *slog.Logger) (*tls.Certificate, *x509.Certificate, error) {
	secret, pin, err := ParseToken(token)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	jt, err := transport.NewQUIC(transport.Config{CAPin: pin, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	defer jt.Close()
	conn, err := transport.NewClient(jt, headAddr)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	reply, err := pb.NewHeadClient(conn).Join(ctx, &pb.JoinRequest{Token: secret, PublicKey: pubDER, Hostname: hostname})
	if err != nil {
		return nil, nil, fmt.Errorf("provider: join %s: %w", headAddr, err)
	}
	leaf, err := x509.ParseCertificate(reply.Certificate)
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(reply.CaCertificate)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, ca, nil
}
