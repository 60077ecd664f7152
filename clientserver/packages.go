package clientserver

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// unpackPackage extracts a runtime_env package the client uploaded into the
// KV of account (key = its gcs:// URI) and returns the local directory.
func (s *Server) unpackPackage(account, uri string) (string, error) {
	name := strings.TrimSuffix(strings.TrimPrefix(uri, "gcs://"), ".zip")
	if name == "" || strings.ContainsAny(name, "/\\") || strings.Contains(name, "..") {
		return "", fmt.Errorf("bad package uri %q", uri)
	}
	root := filepath.Join(s.cfg.PackagesDir, packageScope(account))
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	dir := filepath.Join(root, name)
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir, nil
	}
	data, ok, err := s.cfg.KV.Get(s.ctx, scopeNamespace(account, nil), []byte(uri))
	if err != nil {
		return "", fmt.Errorf("runtime_env package %s: %w", uri, err)
	}
	if !ok {
		return "", fmt.Errorf("runtime_env package %s was not uploaded", uri)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return "", fmt.Errorf("package %s is not a zip file: %w", uri, err)
	}
	tmp, err := os.MkdirTemp(root, name+".tmp")
	if err != nil {
		return "", err
	}
	for _, f := range zr.File {
		target := filepath.Join(tmp, filepath.FromSlash(f.Name))
		if !strings.HasPrefix(target, tmp+string(os.PathSeparator)) {
			return "", fmt.Errorf("package %s has an entry outside its root: %q", uri, f.Name)
		}
		if f.FileInfo().IsDir() {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return "", err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return "", err
		}
		if err := extract(f, target); err != nil {
			return "", err
		}
	}
	if err := os.Rename(tmp, dir); err != nil && !os.IsExist(err) {
		if _, statErr := os.Stat(dir); statErr != nil {
			return "", err
		}
		_ = os.RemoveAll(tmp)
	}
	return dir, nil
}

func extract(f *zip.File, target string) error {
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, f.Mode()|0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, rc); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
