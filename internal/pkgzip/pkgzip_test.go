package pkgzip

import (
	"archive/zip"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func zipOf(t *testing.T, names ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, n := range names {
		w, err := zw.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("x"))
	}
	zw.Close()
	return buf.Bytes()
}

func TestUnzip(t *testing.T) {
	dir := t.TempDir()
	if err := Unzip(zipOf(t, "pkg/__init__.py", "a.txt", "./b.txt"), dir, 1<<20, 10); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"pkg/__init__.py", "a.txt", "b.txt"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	for _, tc := range []struct {
		name string
		data []byte
		max  int64
		n    int
		want error
	}{
		{"climbs out", zipOf(t, "../evil"), 1 << 20, 10, ErrUnsafe},
		{"absolute", zipOf(t, "/etc/evil"), 1 << 20, 10, ErrUnsafe},
		{"too many members", zipOf(t, "a", "b", "c"), 1 << 20, 2, ErrUnsafe},
		{"too big", zipOf(t, "a", "b"), 1, 10, ErrUnsafe},
		{"not a zip", []byte("hello"), 1 << 20, 10, ErrNotZip},
	} {
		if err := Unzip(tc.data, t.TempDir(), tc.max, tc.n); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
