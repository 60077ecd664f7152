// Package linkemu emulates a wide-area network link in user space: a UDP or
// TCP proxy that adds one-way propagation delay, jitter, random loss and a
// bandwidth cap to the traffic it forwards. The WAN test harness and the
// benchmarks put it between gray nodes (QUIC over UDP) and between Python
// clients and the head (gRPC over TCP), because the machines they run on
// have no netem qdisc for tc.
//
// # Model
//
// Each direction of a proxy is one Link, shared by every client (session or
// connection) of the proxy, like a single bottleneck link in front of the
// target. A packet (UDP datagram, or a chunk of a TCP byte stream) arriving
// at time now goes through:
//
//  1. Partition: while SetPartitioned(true), UDP packets are dropped; TCP
//     data is held (see TCPProxy).
//  2. Loss (UDP only): dropped with probability Link.Loss, drawn from a
//     math/rand/v2 PCG seeded with Config.Seed and the direction, one draw per
//     packet, so the n-th packet of a direction is dropped or not the same way
//     in every run with the same seed.
//  3. Serialization: with Link.Bandwidth set, the link transmits one packet
//     at a time. start = max(now, busyUntil); busyUntil = start + size×8/bandwidth.
//     The backlog (busyUntil − now) is the bottleneck queue; a UDP packet that
//     would make it exceed Link.QueueBytes is dropped (drop-tail), a TCP reader
//     waits until the backlog drains below it.
//  4. Propagation: the packet is due at busyUntil + Delay + jitter, with
//     jitter uniform in [−Jitter, +Jitter] (the total never below zero).
//
// So delay and serialization add, they do not multiply: a 64 KiB burst over a
// 100 Mbit/s link with 80 ms delay has its last byte delivered about
// 80 ms + 5.2 ms after the burst was sent.
//
// Packets are never delivered before they are due; they are delivered as soon
// after as the Go timer and scheduler allow (typically well under a
// millisecond on an idle machine).
//
// # Reordering
//
// Only jitter reorders. Without jitter due times never decrease, and packets
// with equal due times leave in arrival order. With jitter, two UDP packets
// whose jitter-free due times lie less than 2×Jitter apart may swap, as on a
// netem link; Link.InOrder clamps every due time to no earlier than the
// previous one, which keeps order (jitter then mostly delays). TCP data is
// always kept in order.
//
// # Timing machinery
//
// A UDP direction has one scheduler goroutine and a min-heap of packets keyed
// by (due time, arrival sequence), with a single timer set to the earliest due
// time; pushing a new earliest packet wakes the scheduler. A TCP connection
// has, per direction, a reader goroutine that stamps each chunk with its due
// time and a writer goroutine that takes chunks from a bounded FIFO (due times
// there never decrease) and waits on one timer for each. Due times are
// absolute, so waiting for one packet never delays the next.
//
// # Memory
//
// Memory is bounded: the bottleneck queue by Link.QueueBytes, the packets in
// propagation by Config.MaxInFlightBytes (UDP: per direction of the proxy,
// excess dropped; TCP: per direction of each connection, excess blocks the
// reader), and the UDP sessions by Config.MaxSessions.
package linkemu
