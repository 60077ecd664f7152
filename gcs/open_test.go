package gcs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// How --gcs-storage and the state directory pick the backend.
func TestOpenStoreChoice(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, spec, stateDir string
		want                 string // Describe prefix
		err                  error
	}{
		{"default with a state dir is bolt", "", filepath.Join(dir, "a"), "bolt " + filepath.Join(dir, "a", StoreFile), nil},
		{"default without a state dir is memory", "", "", "memory", nil},
		{"default with an unusable state dir is memory", "", filepath.Join(notDir, "sub"), "memory", nil},
		{"bolt", "bolt", filepath.Join(dir, "b"), "bolt " + filepath.Join(dir, "b", StoreFile), nil},
		{"memory even with a state dir", "memory", filepath.Join(dir, "c"), "memory", nil},
		{"bolt needs a state dir", "bolt", "", "", ErrBadStorage},
		{"unknown", "etcd://x", dir, "", ErrBadStorage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := OpenStore(bg, tc.spec, tc.stateDir, nil)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("OpenStore(%q, %q) = %v, want %v", tc.spec, tc.stateDir, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !strings.HasPrefix(s.Describe(), tc.want) {
				t.Fatalf("OpenStore(%q, %q) is %q, want %q", tc.spec, tc.stateDir, s.Describe(), tc.want)
			}
		})
	}
}

// A state dir whose store another process (here: handle) holds is an
// error, not a quiet fall back to memory.
func TestOpenStoreHeldFile(t *testing.T) {
	dir := t.TempDir()
	held, err := OpenStore(bg, "", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if s, err := OpenStore(bg, "", dir, nil); err == nil {
		s.Close()
		t.Fatalf("a second open of a held %s succeeded: %s", StoreFile, s.Describe())
	}
}
