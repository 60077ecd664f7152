// Package transport carries bytes between gray nodes. It is the only package
// that imports quic-go; everything above it sees net.Conn and net.Listener.
//
// A [Transport] listens for and dials authenticated, bidirectional streams.
// Each stream is a net.Conn, so grpc-go runs over it unchanged (see
// [NewClient], [WithTransport] and [Serve]), and raw protocols such as object
// chunk streams can use it directly. Every conn carries the identity of the
// node at the other end; read it with [PeerOf] or, inside a gRPC handler,
// with [PeerFromContext].
//
// Two implementations exist:
//
//   - [QUIC]: QUIC over quic-go with TLS 1.3 and mutual authentication
//     against the pool's CA. One QUIC connection is kept per remote address
//     and every Dial opens a new stream on it, so dials after the first cost
//     no round trip and streams do not block each other.
//   - [Mem]: an in-memory network ([Network]) built on net.Pipe for tests,
//     with partitions for churn tests.
//
// Certificates for the pool are minted with [NewCA] and [CA.NewNodeCert]; a
// node's id is its certificate's CommonName.
//
// Both implementations follow one contract, checked by a shared test suite:
//
//   - Dial returns a fresh stream; it fails with [ErrUnreachable] when nothing
//     listens at the address (or the path is partitioned), with
//     [ErrUnauthenticated] when TLS refuses either side, and with [ErrClosed]
//     after Close.
//   - Closing a Listener stops new dials and new streams at once. Conns it
//     already accepted keep working until they are closed, so that
//     grpc.Server.GracefulStop, which closes its listeners first, can still
//     finish the RPCs in flight.
//   - Closing a conn ends both directions: the peer's Read returns io.EOF once
//     it has read what was written, and its writes fail.
//   - Closing a Transport closes its listeners and every conn, at once.
package transport
