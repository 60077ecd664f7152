package gcs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// StoreFile is the bbolt file's name under the state directory.
const StoreFile = "gcs.db"

// ErrBadStorage: a --gcs-storage value that names no backend.
var ErrBadStorage = errors.New("gcs store: bad storage")

// OpenStore opens the store that spec names:
//
//	"memory"               nothing survives a restart
//	"bolt"                 the bbolt file StoreFile under stateDir
//	"redis://…", "rediss://…", "unix://…"  a Redis database (OpenRedisStore)
//	""                     bolt when stateDir can be used, else memory
//
// For "", stateDir can be used when it is set and can be created and
// written; otherwise the head runs on memory and OpenStore logs why. A
// state directory that can be written but whose file cannot be opened (held
// by another process, corrupt) is an error, not a fallback: a head must not
// quietly drop what it kept.
func OpenStore(ctx context.Context, spec, stateDir string, log *slog.Logger) (Store, error) {
	if log == nil {
		log = slog.Default()
	}
	switch {
	case spec == "memory":
		return NewMemStore(), nil
	case strings.HasPrefix(spec, "redis://") || strings.HasPrefix(spec, "rediss://") || strings.HasPrefix(spec, "unix://"):
		return OpenRedisStore(ctx, spec)
	case spec == "bolt":
		if stateDir == "" {
			return nil, fmt.Errorf("%w: bolt needs a state directory", ErrBadStorage)
		}
		if err := os.MkdirAll(stateDir, 0o700); err != nil {
			return nil, fmt.Errorf("gcs store: %w", err)
		}
		return OpenBoltStore(filepath.Join(stateDir, StoreFile))
	case spec == "":
		if why := unusableDir(stateDir); why != "" {
			log.Warn("GCS tables are kept in memory: nothing survives a head restart", "reason", why)
			return NewMemStore(), nil
		}
		return OpenBoltStore(filepath.Join(stateDir, StoreFile))
	}
	return nil, fmt.Errorf("%w: %q (want bolt, memory or a redis:// URL)", ErrBadStorage, spec)
}

// unusableDir says why dir cannot hold the store ("" when it can).
func unusableDir(dir string) string {
	if dir == "" {
		return "no state directory"
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err.Error()
	}
	f, err := os.CreateTemp(dir, ".gcs-probe-")
	if err != nil {
		return err.Error()
	}
	f.Close()
	os.Remove(f.Name())
	return ""
}
