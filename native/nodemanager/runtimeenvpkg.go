package nodemanager

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
)

// ErrPackage is a runtime_env package that could not be fetched or unpacked.
var ErrPackage = errors.New("runtime_env package")

const (
	// maxPackageBytes bounds a package read from the GCS (the driver's
	// upload limit is the 512 MiB gRPC message size).
	maxPackageBytes = 512 << 20
	// defaultMaxUnpackedBytes and defaultMaxPackageEntries bound what one
	// package may unpack to.
	defaultMaxUnpackedBytes  = 4 << 30
	defaultMaxPackageEntries = 200_000
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
var errUnsafeZip = errors.New("unsafe zip")

// unzipInto extracts a zip into dir (which exists): members keep their
// paths (a top-level directory stays, as the stock agent keeps it for
// gcs:// packages), regular files keep their permission bits, symlinks
// and other special members are written as plain files. A member path
// that is absolute or climbs out of dir refuses the whole package, as do
// more than maxEntries members or more than maxBytes unpacked.
func unzipInto(data []byte, dir string, maxBytes int64, maxEntries int) error {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return fmt.Errorf("not a zip: %w", err)
	}
	if len(zr.File) > maxEntries {
		return fmt.Errorf("%w: %d members (limit %d)", errUnsafeZip, len(zr.File), maxEntries)
	}
	var total int64
	for _, f := range zr.File {
		rel, err := safeMemberPath(f.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			continue
		}
		target := filepath.Join(dir, filepath.FromSlash(rel))
		if strings.HasSuffix(f.Name, "/") || f.Mode().IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		n, err := writeMember(f, target, maxBytes-total)
		if err != nil {
			return err
		}
		total += n
	}
	return nil
}

// safeMemberPath cleans a zip member name, refusing one that is absolute,
// has a drive or backslash, or climbs out with "..".
func safeMemberPath(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "\\\x00") || strings.HasPrefix(name, "/") ||
		(len(name) >= 2 && name[1] == ':') {
		return "", fmt.Errorf("%w: member %q", errUnsafeZip, name)
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%w: member %q climbs out of the package", errUnsafeZip, name)
	}
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

func writeMember(f *zip.File, target string, budget int64) (int64, error) {
	if budget < 0 || f.UncompressedSize64 > uint64(budget) {
		return 0, fmt.Errorf("%w: unpacks to more than the limit", errUnsafeZip)
	}
	rc, err := f.Open()
	if err != nil {
		return 0, fmt.Errorf("member %q: %w", f.Name, err)
	}
	defer rc.Close()
	perm := f.Mode().Perm() | 0o600
	if !f.Mode().IsRegular() {
		perm = 0o644
	}
	out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return 0, err
	}
	// The header's size may lie: copy at most budget+1 bytes and check.
	n, err := io.Copy(out, io.LimitReader(rc, budget+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("member %q: %w", f.Name, err)
	}
	if n > budget {
		return n, fmt.Errorf("%w: unpacks to more than the limit", errUnsafeZip)
	}
	_ = os.Chmod(target, perm) // past the umask, as the stock agent's chmod
	return n, nil
}
