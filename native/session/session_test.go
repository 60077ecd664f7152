package session

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestNameFormat(t *testing.T) {
	n := Name(time.Date(2026, 12, 3, 8, 51, 53, 877114000, time.UTC), 18956)
	if n != "session_2026-12-03_08-51-53_877114_18956" {
		t.Fatal(n)
	}
}

func TestCreateLayout(t *testing.T) {
	tmp := t.TempDir()
	l, err := New(tmp, Name(time.Now(), os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Create(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{l.LogsDir, l.SocketsDir} {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			t.Fatalf("%s: %v", d, err)
		}
	}
	got, err := os.Readlink(filepath.Join(tmp, "session_latest"))
	if err != nil || got != l.Dir {
		t.Fatalf("session_latest -> %q, %v", got, err)
	}
	if err := l.WriteCurrentCluster("10.0.0.1:6379"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(l.CurrentClusterFile())
	if string(b) != "10.0.0.1:6379" {
		t.Fatalf("ray_current_cluster = %q", b)
	}
	l.RemoveCurrentCluster("10.0.0.2:6379") // someone else's: kept
	if _, err := os.Stat(l.CurrentClusterFile()); err != nil {
		t.Fatal("removed a file naming another cluster")
	}
	l.RemoveCurrentCluster("10.0.0.1:6379")
	if _, err := os.Stat(l.CurrentClusterFile()); !os.IsNotExist(err) {
		t.Fatal("ray_current_cluster left behind")
	}
}

func TestSocketPathLimit(t *testing.T) {
	if _, err := New("/"+strings.Repeat("d", 90), "session_x"); !errors.Is(err, ErrSocketPath) {
		t.Fatalf("want ErrSocketPath, got %v", err)
	}
}

func TestDefaultTempDirFollowsRay(t *testing.T) {
	t.Setenv("RAY_TMPDIR", "/x")
	t.Setenv("TMPDIR", "/y")
	if d := DefaultTempDir(); d != "/x/ray" {
		t.Fatal(d)
	}
	t.Setenv("RAY_TMPDIR", "")
	if d := DefaultTempDir(); d != "/y/ray" {
		t.Fatal(d)
	}
	t.Setenv("TMPDIR", "")
	if d := DefaultTempDir(); d != "/tmp/ray" {
		t.Fatal(d)
	}
}

func TestNodeIP(t *testing.T) {
	if !regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`).MatchString(NodeIP()) {
		t.Fatal(NodeIP())
	}
}
