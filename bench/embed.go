// Package bench ships the side-by-side benchmark scripts inside the gray
// binary so that `gray bench` runs them from any directory.
package bench

import (
	"embed"
	"fmt"
	"os"
	"path/filepath"
)

//go:embed harness.py client_microbenchmark.py
var scripts embed.FS

// WriteScripts writes the benchmark scripts into dir and returns the
// harness path.
func WriteScripts(dir string) (string, error) {
	for _, name := range []string{"harness.py", "client_microbenchmark.py"} {
		b, err := scripts.ReadFile(name)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return "", fmt.Errorf("bench: write %s: %w", name, err)
		}
	}
	return filepath.Join(dir, "harness.py"), nil
}
