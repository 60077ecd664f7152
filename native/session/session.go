// Package session lays out what a stock Ray driver expects to find on a
// node it connects to: the session directory under the Ray temp dir (logs,
// sockets, runtime resources), the session_latest link, and the
// ray_current_cluster file that `ray.init(address="auto")` reads. It also
// finds the node IP the way Ray does, since a stock driver given
// 127.0.0.1 dials that address instead.
package session

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// DefaultTempDir is Ray's default temp dir as Ray picks it: "ray" under
// $RAY_TMPDIR, else $TMPDIR, else /tmp.
func DefaultTempDir() string {
	base := "/tmp"
	if d := os.Getenv("RAY_TMPDIR"); d != "" {
		base = d
	} else if d := os.Getenv("TMPDIR"); d != "" {
		base = d
	}
	return filepath.Join(base, "ray")
}

// MaxSocketPath is the longest unix socket path (sun_path less its NUL).
const MaxSocketPath = 107

// ErrSocketPath means the temp dir is too deep for unix socket names.
var ErrSocketPath = errors.New("session: socket path too long")

// Layout is one session's paths.
type Layout struct {
	TempDir      string // e.g. /tmp/ray
	Name         string // session_2026-12-03_12-00-00_123456_4242
	Dir          string // TempDir/Name
	LogsDir      string
	SocketsDir   string
	RayletSocket string
	PlasmaSocket string
	SpillDir     string
}

// Name returns a session name in Ray's format for a session started at t by
// process pid.
func Name(t time.Time, pid int) string {
	return fmt.Sprintf("session_%s_%06d_%d", t.Format("2006-01-02_15-04-05"), t.Nanosecond()/1000, pid)
}

// New describes the session name under tempDir ("" = DefaultTempDir()).
func New(tempDir, name string) (Layout, error) {
	if tempDir == "" {
		tempDir = DefaultTempDir()
	}
	abs, err := filepath.Abs(tempDir)
	if err != nil {
		return Layout{}, err
	}
	dir := filepath.Join(abs, name)
	l := Layout{
		TempDir:      abs,
		Name:         name,
		Dir:          dir,
		LogsDir:      filepath.Join(dir, "logs"),
		SocketsDir:   filepath.Join(dir, "sockets"),
		RayletSocket: filepath.Join(dir, "sockets", "raylet"),
		PlasmaSocket: filepath.Join(dir, "sockets", "plasma_store"),
		SpillDir:     filepath.Join(dir, "ray_spilled_objects"),
	}
	if len(l.PlasmaSocket) > MaxSocketPath {
		return Layout{}, fmt.Errorf("%w: %s is %d bytes (limit %d); use a shorter --temp-dir", ErrSocketPath, l.PlasmaSocket, len(l.PlasmaSocket), MaxSocketPath)
	}
	return l, nil
}

// Create makes the directories and points TempDir/session_latest at Dir.
func (l Layout) Create() error {
	for _, d := range []string{l.LogsDir, l.SocketsDir, filepath.Join(l.Dir, "runtime_resources")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	link := filepath.Join(l.TempDir, "session_latest")
	tmp := link + fmt.Sprintf(".%d", os.Getpid())
	_ = os.Remove(tmp)
	if err := os.Symlink(l.Dir, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, link)
}

// CurrentClusterFile is where `ray.init(address="auto")` looks for the GCS.
func (l Layout) CurrentClusterFile() string {
	return filepath.Join(l.TempDir, "ray_current_cluster")
}

// WriteCurrentCluster records the GCS address for address="auto".
func (l Layout) WriteCurrentCluster(gcsAddr string) error {
	tmp := l.CurrentClusterFile() + fmt.Sprintf(".%d", os.Getpid())
	if err := os.WriteFile(tmp, []byte(gcsAddr), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, l.CurrentClusterFile())
}

// RemoveCurrentCluster removes the file if it still names gcsAddr (a newer
// cluster may have replaced it).
func (l Layout) RemoveCurrentCluster(gcsAddr string) {
	if b, err := os.ReadFile(l.CurrentClusterFile()); err == nil && string(b) == gcsAddr {
		_ = os.Remove(l.CurrentClusterFile())
	}
}

// NodeIP returns the address of the interface that routes to the internet,
// found as Ray does it: a UDP "connection" toward a public address sends no
// packet but makes the kernel pick the source address. With no route it
// falls back to 127.0.0.1.
func NodeIP() string {
	c, err := net.Dial("udp4", "8.8.8.8:53")
	if err != nil {
		return "127.0.0.1"
	}
	defer c.Close()
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && !a.IP.IsUnspecified() {
		return a.IP.String()
	}
	return "127.0.0.1"
}
