// Package pkgzip unpacks runtime_env packages (the gcs://_ray_pkg_*.zip
// archives drivers and job clients upload) safely: members keep their paths
// and permission bits, nothing lands outside the target directory, and the
// total size and member count are bounded. The native raylet and the Jobs
// API both unpack packages with it.
package pkgzip

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Default limits on what one package may unpack to.
const (
	DefaultMaxUnpackedBytes = 4 << 30
	DefaultMaxEntries       = 200_000
)

// ErrUnsafe is a zip member that would land outside the target directory,
// or a zip past the size limits.
var ErrUnsafe = errors.New("unsafe zip")

// ErrNotZip is data that is not a zip archive.
var ErrNotZip = errors.New("not a zip")

// Unzip extracts a zip into dir (which exists): members keep their paths (a
// top-level directory stays, as the stock agent keeps it for gcs://
// packages), regular files keep their permission bits, symlinks and other
// special members are written as plain files. A member path that is
// absolute or climbs out of dir refuses the whole package, as do more than
// maxEntries members or more than maxBytes unpacked.
func Unzip(data []byte, dir string, maxBytes int64, maxEntries int) error {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotZip, err)
	}
	if len(zr.File) > maxEntries {
		return fmt.Errorf("%w: %d members (limit %d)", ErrUnsafe, len(zr.File), maxEntries)
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
		return "", fmt.Errorf("%w: member %q", ErrUnsafe, name)
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("%w: member %q climbs out of the package", ErrUnsafe, name)
	}
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

func writeMember(f *zip.File, target string, budget int64) (int64, error) {
	if budget < 0 || f.UncompressedSize64 > uint64(budget) {
		return 0, fmt.Errorf("%w: unpacks to more than the limit", ErrUnsafe)
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
		return n, fmt.Errorf("%w: unpacks to more than the limit", ErrUnsafe)
	}
	_ = os.Chmod(target, perm) // past the umask, as the stock agent's chmod
	return n, nil
}
