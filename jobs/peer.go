package jobs

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Origin is what the head knows of a Ray Client session an entrypoint
// opened: the submission it belongs to, the job's runtime_env (the
// session's defaults, as a stock driver merges its job config) and the
// account the job is billed to.
type Origin struct {
	SubmissionID string
	RuntimeEnv   map[string]any
	Account      string
	PID          int // the process that opened the connection
}

// OriginOf finds the running submission whose entrypoint (a process of
// its process group) holds the client end of the TCP connection from
// peer, as the head sees it. A Ray Client sends no process environment,
// so the connection's owner is how the head tells that a session is a
// job's driver.
func (m *Manager) OriginOf(peer net.Addr) (Origin, bool) {
	tcp, ok := peer.(*net.TCPAddr)
	if !ok {
		return Origin{}, false
	}
	m.mu.Lock()
	groups := map[int]string{}
	for sid := range m.live {
		if rec, err := m.store.Get(m.ctx, sid); err == nil && rec.DriverPID != 0 && rec.Status == Running {
			groups[rec.DriverPID] = sid // the leader's pid is its group's id
		}
	}
	m.mu.Unlock()
	if len(groups) == 0 {
		return Origin{}, false
	}
	pid, pgid, ok := socketOwner(tcp, groups)
	if !ok {
		return Origin{}, false
	}
	sid := groups[pgid]
	rec, err := m.update(sid, func(r *Record) { r.ClientPID = pid })
	if err != nil {
		return Origin{}, false
	}
	return Origin{SubmissionID: sid, RuntimeEnv: cloneAny(rec.RuntimeEnv), Account: rec.Account, PID: pid}, true
}

// procNetAddr formats addr as /proc/net/tcp{,6} write local addresses:
// each 4 bytes of the IP read as a host-order (little-endian) word, then
// the port, in upper-case hex. An IPv4 address may show in tcp6 as
// IPv4-mapped.
func procNetAddr(addr *net.TCPAddr) (v4, v6 string) {
	words := func(ip net.IP) string {
		var b strings.Builder
		for i := 0; i+4 <= len(ip); i += 4 {
			fmt.Fprintf(&b, "%08X", binary.LittleEndian.Uint32(ip[i:i+4]))
		}
		return fmt.Sprintf("%s:%04X", b.String(), addr.Port)
	}
	if ip4 := addr.IP.To4(); ip4 != nil {
		return words(ip4), words(ip4.To16())
	}
	return "", words(addr.IP.To16())
}

// socketInode finds the inode of the socket whose local address is local
// in the text of /proc/net/tcp or tcp6.
func socketInode(table, local string) (uint64, bool) {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[1] != local {
			continue
		}
		n, err := strconv.ParseUint(f[9], 10, 64)
		if err == nil && n != 0 {
			return n, true
		}
	}
	return 0, false
}

// statGroupState reads the process group id and the state from a
// /proc/PID/stat line (the command name, in parentheses, may hold spaces
// and parentheses).
func statGroupState(stat string) (pgid int, state string, ok bool) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 3 {
		return 0, "", false
	}
	n, err := strconv.Atoi(f[2]) // state, ppid, pgrp
	return n, f[0], err == nil
}
