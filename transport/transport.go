package transport

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"time"
)

// Errors returned by this package. Errors from Dial, Accept and Listen wrap
// one of them; check with errors.Is. context.Canceled and
// context.DeadlineExceeded stay visible through the wrapping.
var (
	// ErrUnreachable: nothing accepted the dial. Nobody listens at the
	// address, the listener is closed or draining, the handshake timed out,
	// or the path is partitioned (mem).
	ErrUnreachable = errors.New("transport: peer unreachable")
	// ErrUnauthenticated: the TLS handshake failed because one side refused
	// the other's certificate (or there was none where one is required).
	ErrUnauthenticated = errors.New("transport: peer not authenticated")
	// ErrClosed: the Transport or Listener was closed. It also matches
	// net.ErrClosed, so grpc.Server.Serve and similar loops stop cleanly.
	ErrClosed = errClosed{}
	// ErrAddrInUse: Listen on an address that already has a listener.
	ErrAddrInUse = errors.New("transport: address already in use")
	// ErrInvalidConfig: a Config or argument cannot work (missing
	// certificate or CA, empty node id, ...).
	ErrInvalidConfig = errors.New("transport: invalid configuration")
)

// errClosed is ErrClosed: its own sentinel, and net.ErrClosed as well.
type errClosed struct{}

func (errClosed) Error() string { return "transport: closed" }
func (errClosed) Unwrap() error { return net.ErrClosed }

// Transport listens for and dials streams between nodes. Implementations are
// safe for concurrent use.
type Transport interface {
	// Listen starts accepting streams at addr. ctx bounds only the setup; the
	// listener lives until it or the Transport is closed. Errors:
	// ErrAddrInUse, ErrInvalidConfig, ErrClosed.
	Listen(ctx context.Context, addr string) (Listener, error)
	// Dial opens one new bidirectional stream to the listener at addr.
	// Connections to the same addr are shared, so only the first Dial to a
	// peer pays for a handshake. ctx bounds the dial, not the returned conn.
	// Errors: ErrUnreachable, ErrUnauthenticated, ErrClosed, ctx's error.
	Dial(ctx context.Context, addr string) (net.Conn, error)
	// Close closes every listener and conn of this Transport, without
	// draining. Later calls return ErrClosed.
	Close() error
}

// Listener accepts authenticated streams from peers. Accept returns conns
// that carry a PeerInfo (see PeerOf). After Close, Accept returns an error
// matching ErrClosed and net.ErrClosed; conns already accepted live on until
// they are closed.
type Listener interface {
	net.Listener
}

// PeerInfo describes the node at the other end of a conn.
type PeerInfo struct {
	// NodeID is the CommonName of the peer's certificate, or the node id a
	// Mem transport was created with. It is empty for a peer that connected
	// without a certificate (Config.AllowUnauthenticated).
	NodeID string
	// Certificate is the peer's verified leaf certificate; nil for Mem and
	// for unauthenticated peers.
	Certificate *x509.Certificate
	// RTT is the smoothed round-trip time of the underlying QUIC connection
	// when Peer was called; 0 for Mem.
	RTT time.Duration
}

// peerer is implemented by every conn, and every conn's RemoteAddr, that this
// package returns.
type peerer interface{ Peer() PeerInfo }

// PeerOf returns the identity of the node at the other end of c. It reports
// false for conns that did not come from this package.
func PeerOf(c net.Conn) (PeerInfo, bool) {
	if p, ok := c.(peerer); ok {
		return p.Peer(), true
	}
	return PeerInfo{}, false
}

// peerAddr is the RemoteAddr of every conn from this package. It carries the
// peer's identity so that code which only sees a net.Addr, such as grpc's
// peer.Peer, can still learn who is at the other end (see PeerFromContext).
type peerAddr struct {
	net.Addr
	peer func() PeerInfo
}

func (a *peerAddr) Peer() PeerInfo { return a.peer() }

var (
	_ Transport = (*QUIC)(nil)
	_ Transport = (*Mem)(nil)
)
