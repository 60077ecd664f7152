// Package worker ships the Python worker runtime that raylets start for tasks
// and actors. The script is embedded in the gray binary and written out at
// start-up, so a provider needs only the binary and a Python with ray installed.
package worker

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"
)

//go:embed runtime/gray_worker.py runtime/gray_pg.py runtime/gray_patches.py
var files embed.FS

// WriteScript writes the runtime into dir and returns its path.
func WriteScript(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("worker: create %s: %w", dir, err)
	}
	for _, name := range []string{"gray_worker.py", "gray_pg.py", "gray_patches.py"} {
		b, err := files.ReadFile("runtime/" + name)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return "", fmt.Errorf("worker: write runtime: %w", err)
		}
	}
	return filepath.Join(dir, "gray_worker.py"), nil
}
