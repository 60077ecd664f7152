// Package tunnel carries TCP connections between gray nodes over the pool's
// transport (QUIC with mutual TLS), so that stock Ray processes and gray's
// own services reach each other's "ip:port"s across the pool. Providers
// dial out to the head, which relays provider↔provider; where a provider's
// peer listener is reachable, other providers dial it directly instead
// (direct.go: the head names the peer, its certificate must match, and the
// relay is the fallback).
// Domain code passes a transport.Transport; nothing here knows QUIC.
//
// # Pieces
//
//   - [Mux] splits the head's transport listener: tunnel streams (they start
//     with [Magic]) go to a handler, [Hub.Handle]; all other streams (gRPC)
//     come out of the returned [MuxListener] for the head's grpc.Server.
//   - [Hub] (head): [NewHub] with [HubConfig.Resolve], which maps a target
//     host to the node owning it (a provider's virtual IP → its node id, the
//     head's own IPs → ""). [Hub.Dial] connects the head's own code (e.g. a
//     gRPC ContextDialer) to any node's target; [Hub.Connected] tells whether
//     a provider's tunnel is up; [Hub.Close] cuts everything.
//   - [Agent] (provider): [NewAgent] with the provider's transport and the
//     head's node address. [Agent.Start] keeps a listen stream to the head
//     (reconnecting with backoff); the head asks over it for back streams to
//     the provider's own targets, only on [AgentConfig.Hosts] (its virtual
//     IP), 127.0.0.1 and ::1. [Agent.Dial] reaches other nodes' targets
//     through the head. [Agent.WaitReady] waits for the listen stream.
//   - [Proxy]: an HTTP CONNECT proxy on 127.0.0.1 for a node's stock Ray
//     processes; [Env] is the environment that makes their gRPC use it.
//   - [Forwarder] (head): plain TCP listeners (e.g. on a provider's virtual
//     IP and port, which is local on Linux) piped through [Hub.Dial], for
//     stock drivers on the head that have no proxy environment.
//
// # Wire format
//
// A tunnel stream starts with Magic ("GRAYTUN1") and one frame: len(2, big
// endian) op(1) id(8) target, target "host:port" or empty. Replies are
// status(1) len(2) message. Ops:
//
//   - dial target: the head connects to target (directly, or through the
//     owning provider) and replies; on OK, raw bytes flow both ways.
//   - listen (provider → head): the head replies OK, then writes frames on
//     it: open id target (dial target, answer with back id) and ping.
//   - back id (provider → head): followed by the provider's own status for
//     its local dial of the open's target; the head replies OK (or refuses
//     an id it never asked of that node, by certificate CN) and the stream
//     carries that connection.
//
// Status codes map to [ErrBadRequest], [ErrRefused], [ErrNoRoute],
// [ErrUnreachable], [ErrTimeout] and [ErrClosed]; the errors of Dial wrap
// them. Every wait has a timeout. Piping half-closes (CloseWrite) where both
// ends can, and closes both ends when either fails.
package tunnel
