// Package worker ships the Python worker runtime that raylets start for tasks
// and actors. The script is embedded in the gray binary and written out at
// start-up, so a provider needs only the binary and a Python with ray installed.
package worker

import (
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
)

//go:embed runtime/gray_worker.py
var script []byte

// Script returns the worker runtime source.
func Script() []byte { return script }

// WriteScript writes the runtime into dir and returns its path.
func WriteScript(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("worker: create %s: %w", dir, err)
	}
	p := filepath.Join(dir, "gray_worker.py")
	if err := os.WriteFile(p, script, 0o644); err != nil {
		return "", fmt.Errorf("worker: write runtime: %w", err)
	}
	return p, nil
}
