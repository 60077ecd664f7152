package transport

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// ALPN is the application protocol both ends of a gray QUIC connection
// negotiate. Bump it when the framing below changes incompatibly.
const ALPN = "gray/1"

// Framing on top of QUIC, kept to a byte each way:
//
//   - The dialer writes streamPreamble first on every stream it opens. quic-go
//     only tells the peer about a stream once data arrives on it, so without
//     it a protocol where the server speaks first would hang.
//   - The server opens one unidirectional control stream per connection and
//     writes ctrlWelcome once it has accepted the connection (TLS 1.3 lets the
//     client finish its handshake before the server has checked the client's
//     certificate; the welcome is how Dial learns it was accepted), and
//     ctrlGoAway when its listener closes, so the client stops opening
//     streams there.
const (
	streamPreamble byte = 0x67 // 'g'
	ctrlWelcome    byte = 0x01
	ctrlGoAway     byte = 0x02
)

// Application error codes, on the wire.
const (
	codeOK           = 0x0 // normal close of a stream or connection
	codeRefused      = 0x1 // stream refused: the listener is closed or draining
	codeBadPreamble  = 0x2 // stream did not start with streamPreamble
	codeShuttingDown = 0x3 // the Transport is closing
)

// peerIdent is what we know about the node at the other end of a QUIC
// connection; shared by all streams of that connection.
type peerIdent struct {
	qc     *quic.Conn
	nodeID string
	cert   *x509.Certificate
}

func newPeerIdent(qc *quic.Conn) *peerIdent {
	p := &peerIdent{qc: qc}
	if certs := qc.ConnectionState().TLS.PeerCertificates; len(certs) > 0 {
		p.cert = certs[0]
		p.nodeID = certs[0].Subject.CommonName
	}
	return p
}

func (p *peerIdent) info() PeerInfo {
	return PeerInfo{NodeID: p.nodeID, Certificate: p.cert, RTT: p.qc.ConnectionStats().SmoothedRTT}
}

// streamConn is a net.Conn over one bidirectional QUIC stream.
type streamConn struct {
	st      *quic.Stream
	peer    *peerIdent
	remote  *peerAddr
	onClose func() // called once, after the stream is closed; may be nil

	// wmu serialises Write and Close: quic-go forbids calling
	// Stream.Close concurrently with Write, while net.Conn allows it.
	wmu    sync.Mutex
	mu     sync.Mutex
	closed bool // guarded by mu
}

func newStreamConn(st *quic.Stream, p *peerIdent, onClose func()) *streamConn {
	c := &streamConn{st: st, peer: p, onClose: onClose}
	c.remote = &peerAddr{Addr: p.qc.RemoteAddr(), peer: p.info}
	return c
}

func (c *streamConn) Peer() PeerInfo       { return c.peer.info() }
func (c *streamConn) LocalAddr() net.Addr  { return c.peer.qc.LocalAddr() }
func (c *streamConn) RemoteAddr() net.Addr { return c.remote }

func (c *streamConn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.st.Read(p)
	if err != nil && err != io.EOF && c.isClosed() {
		err = net.ErrClosed
	}
	return n, err
}

func (c *streamConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.isClosed() {
		return 0, net.ErrClosed
	}
	n, err := c.st.Write(p)
	if err != nil && c.isClosed() {
		err = net.ErrClosed
	}
	return n, err
}

// Close stops reading (the peer's writes fail), and ends the write side with
// a FIN after the data already written, which QUIC still delivers. A Write
// blocked in another goroutine is cut short first.
func (c *streamConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed = true
	c.mu.Unlock()

	c.st.CancelRead(codeOK)
	_ = c.st.SetWriteDeadline(time.Unix(1, 0)) // unblock a pending Write
	c.wmu.Lock()
	_ = c.st.Close() // fails only if the peer already reset the stream
	c.wmu.Unlock()
	if c.onClose != nil {
		c.onClose()
	}
	return nil
}

// CloseWrite ends the write side with a FIN after the data already written,
// as net.TCPConn.CloseWrite does: the peer reads io.EOF, and this end keeps
// reading what the peer sends until Close.
func (c *streamConn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.isClosed() {
		return net.ErrClosed
	}
	return c.st.Close()
}

func (c *streamConn) SetDeadline(t time.Time) error      { return c.st.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.st.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.st.SetWriteDeadline(t) }

// verifyPeer checks a peer's certificate chain against the CA, for the given
// usage. Peers are named by node id, not by address, so there is no host name
// check: any certificate the CA signed is a valid pool member.
func verifyPeer(pool *x509.CertPool, certs []*x509.Certificate, usage x509.ExtKeyUsage) error {
	if len(certs) == 0 {
		return errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return err
	}
	_, err = nodeIDOf(certs[0])
	return err
}

// verifyPinned accepts a server chain whose leaf is signed by a CA
// certificate, sent in the chain, whose SHA-256 is pin.
func verifyPinned(pin []byte, certs []*x509.Certificate) error {
	for _, c := range certs[min(1, len(certs)):] {
		sum := sha256.Sum256(c.Raw)
		if subtle.ConstantTimeCompare(sum[:], pin) == 1 {
			pool := x509.NewCertPool()
			pool.AddCert(c)
			return verifyPeer(pool, certs[:1], x509.ExtKeyUsageServerAuth)
		}
	}
	return errors.New("no certificate in the server's chain matches the pinned CA")
}

// dialError turns what quic-go returned while connecting into our sentinels.
func dialError(addr string, err error) error {
	if te, ok := errors.AsType[*quic.TransportError](err); ok {
		switch {
		case te.ErrorCode.IsCryptoError() && te.Remote:
			return fmt.Errorf("%w: %s refused our certificate: %w", ErrUnauthenticated, addr, err)
		case te.ErrorCode.IsCryptoError():
			return fmt.Errorf("%w: %s: %w", ErrUnauthenticated, addr, err)
		case te.ErrorCode == quic.ConnectionRefused:
			return fmt.Errorf("%w: %s refused the connection (listener closed): %w", ErrUnreachable, addr, err)
		}
	}
	if errors.Is(err, ErrClosed) {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnreachable, addr, err)
}

// tlsConfigs builds the server and client TLS configs of a QUIC transport.
func tlsConfigs(cfg *Config) (server, client *tls.Config) {
	log := cfg.Logger
	server = &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		// We verify in VerifyConnection ourselves, so that a missing
		// certificate can be allowed while joining and a bad one never is.
		ClientAuth: tls.RequestClientCert,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			remote := "unknown"
			if hello.Conn != nil {
				remote = hello.Conn.RemoteAddr().String()
			}
			c := server.Clone()
			c.GetConfigForClient = nil
			c.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 && cfg.AllowUnauthenticated {
					return nil
				}
				err := verifyPeer(cfg.CA, cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
				if err != nil {
					log.Warn("refused peer", "remote", remote, "err", err)
				}
				return err
			}
			return c, nil
		},
	}
	if cfg.Certificate != nil {
		server.Certificates = []tls.Certificate{*cfg.Certificate}
	}
	client = &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		// The standard check wants a host name in the certificate; ours
		// name node ids. VerifyConnection does the chain check instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cfg.CA == nil {
				return verifyPinned(cfg.CAPin, cs.PeerCertificates)
			}
			return verifyPeer(cfg.CA, cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
		},
		// Always present our certificate, even when the server's list of
		// acceptable CAs does not name its issuer: a certificate from the
		// wrong CA must be refused, not silently dropped into an
		// unauthenticated join.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cfg.Certificate == nil {
				return &tls.Certificate{}, nil
			}
			return cfg.Certificate, nil
		},
	}
	return server, client
}
