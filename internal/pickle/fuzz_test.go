package pickle

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzScanStubs feeds arbitrary bytes to every reader: none may panic or
// modify its input.
func FuzzScanStubs(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.pkl"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err == nil && len(data) < 64<<10 {
			f.Add(data)
		}
	}
	f.Add(numpyTaskArgs(100, objStub(1)))
	f.Add((&pickleOps{}).op(opEmptySet, opMark).bytes([]byte("x")).op(opAddItems, opStop).b)
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		stubs, err := ScanStubsBytes(data)
		if err == nil {
			for _, s := range stubs {
				if s.Type == "" {
					t.Errorf("stub without type: %+v", s)
				}
			}
		}
		_, _ = ScanTaskArgsBytes(data)
		_, _ = DecodeBytes(data)
		if !bytes.Equal(data, orig) {
			t.Fatal("input modified")
		}
	})
}
