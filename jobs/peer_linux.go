package jobs

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// socketOwner finds the process, among those of the given process
// groups, holding the TCP socket whose local address is addr.
func socketOwner(addr *net.TCPAddr, groups map[int]string) (pid, pgid int, ok bool) {
	v4, v6 := procNetAddr(addr)
	var inode uint64
	for _, t := range []struct{ path, local string }{{"/proc/net/tcp", v4}, {"/proc/net/tcp6", v6}} {
		if t.local == "" {
			continue
		}
		if b, err := os.ReadFile(t.path); err == nil {
			if inode, ok = socketInode(string(b), t.local); ok {
				break
			}
		}
	}
	if !ok {
		return 0, 0, false
	}
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, false
	}
	for _, p := range procs {
		n, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		g, _, ok := statGroupState(string(stat))
		if !ok {
			continue
		}
		if _, mine := groups[g]; !mine {
			continue
		}
		fdDir := filepath.Join("/proc", p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && l == want {
				return n, g, true
			}
		}
	}
	return 0, 0, false
}

// groupHasLiving reports whether a process of group pgid is alive and not
// a zombie.
func groupHasLiving(pgid int) bool {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return true // cannot tell: assume it lives
	}
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue
		}
		if g, state, ok := statGroupState(string(stat)); ok && g == pgid && state != "Z" && state != "X" {
			return true
		}
	}
	return false
}
