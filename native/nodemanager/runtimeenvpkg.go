package nodemanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/gray-cluster/gray/internal/pkgzip"
)

// ErrPackage is a runtime_env package that could not be fetched or unpacked.
var ErrPackage = errors.New("runtime_env package")

const (
	// maxPackageBytes bounds a package read from the GCS (the driver's
	// upload limit is the 512 MiB gRPC message size).
	maxPackageBytes = 512 << 20
	// defaultMaxUnpackedBytes and defaultMaxPackageEntries bound what one
	// package may unpack to.
	defaultMaxUnpackedBytes  = pkgzip.DefaultMaxUnpackedBytes
	defaultMaxPackageEntries = pkgzip.DefaultMaxEntries
)

// Where packages are unpacked under <session_dir>/runtime_resources, as the
// stock runtime-env agent lays them out.
const (
	workingDirFiles = "working_dir_files"
	pyModulesFiles  = "py_modules_files"
)

// pkgFetcher reads a package's bytes (the GCS internal KV, key = URI).
type pkgFetcher func(ctx context.Context, uri string) ([]byte, error)

// pkgCache unpacks each gcs:// package once per raylet and remembers where.
type pkgCache struct {
	root        string // <session_dir>/runtime_resources
	fetch       pkgFetcher
	log         *slog.Logger
	maxUnpacked int64
	maxEntries  int

	mu      sync.Mutex
	entries map[string]*pkgEntry // kind + "\x00" + uri
}

type pkgEntry struct {
	done chan struct{}
	dir  string
	err  error
}

func newPkgCache(root string, fetch pkgFetcher, log *slog.Logger) *pkgCache {
	return &pkgCache{root: root, fetch: fetch, log: log, maxUnpacked: defaultMaxUnpackedBytes,
		maxEntries: defaultMaxPackageEntries, entries: map[string]*pkgEntry{}}
}

// dir returns the local directory of a package URI of kind
// (workingDirFiles or pyModulesFiles), fetching and unpacking a gcs://
// package the first time. A failure is not remembered: the next lease
// tries again.
func (c *pkgCache) dir(ctx context.Context, kind, uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", fmt.Errorf("%w %s: %v", ErrPackage, uri, err)
	}
	if u.Scheme == "local" {
		if st, err := os.Stat(u.Path); err != nil || !st.IsDir() {
			return "", fmt.Errorf("%w %s: %s must be a directory that exists on every node", ErrPackage, uri, u.Path)
		}
		return u.Path, nil
	}
	key := kind + "\x00" + uri
	for {
		c.mu.Lock()
		e, ok := c.entries[key]
		if !ok {
			e = &pkgEntry{done: make(chan struct{})}
			c.entries[key] = e
			c.mu.Unlock()
			e.dir, e.err = c.unpackURI(ctx, kind, uri, u.Host+u.Path)
			if e.err != nil {
				c.mu.Lock()
				delete(c.entries, key)
				c.mu.Unlock()
			}
			close(e.done)
			return e.dir, e.err
		}
		c.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		if e.err == nil {
			return e.dir, nil
		}
		// The attempt we waited on failed (maybe its caller gave up): try
		// again ourselves.
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
	}
}

// unpackURI fetches and unpacks a gcs:// package into
// <root>/<kind>/<name without .zip>. Packages are unpacked into a temporary
// directory and renamed into place, so a directory under the final name is
// always complete; gcs:// names are content hashes, so one found there
// (another raylet of the session unpacked it) is used as it is.
func (c *pkgCache) unpackURI(ctx context.Context, kind, uri, name string) (string, error) {
	base := filepath.Join(c.root, kind)
	final := filepath.Join(base, strings.TrimSuffix(name, ".zip"))
	if st, err := os.Stat(final); err == nil && st.IsDir() {
		return final, nil
	}
	data, err := c.fetch(ctx, uri)
	if err != nil {
		return "", fmt.Errorf("%w %s: fetching it from the GCS: %w", ErrPackage, uri, err)
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", fmt.Errorf("%w %s: %v", ErrPackage, uri, err)
	}
	tmp, err := os.MkdirTemp(base, ".unpack-")
	if err != nil {
		return "", fmt.Errorf("%w %s: %v", ErrPackage, uri, err)
	}
	if err := unzipInto(data, tmp, c.maxUnpacked, c.maxEntries); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("%w %s: %w", ErrPackage, uri, err)
	}
	_ = os.Chmod(tmp, 0o755)
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		if st, serr := os.Stat(final); serr == nil && st.IsDir() {
			return final, nil // unpacked meanwhile by another raylet
		}
		return "", fmt.Errorf("%w %s: %v", ErrPackage, uri, err)
	}
	c.log.Info("runtime_env package unpacked", "uri", uri, "dir", final, "bytes", len(data))
	return final, nil
}

// errUnsafeZip is a zip member that would land outside the target
// directory, or a zip past the size limits.
var errUnsafeZip = pkgzip.ErrUnsafe

// unzipInto extracts a zip into dir (see pkgzip.Unzip).
func unzipInto(data []byte, dir string, maxBytes int64, maxEntries int) error {
	return pkgzip.Unzip(data, dir, maxBytes, maxEntries)
}
