package plasma

import (
	"bytes"
	"errors"
	"testing"
)

func TestWriterFillsInPlaceAndSeals(t *testing.T) {
	s := newStore(t, Config{})
	id := oid(1)
	w, err := s.Create(id, 10, []byte("meta"), Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Contains(id) {
		t.Fatal("unsealed object visible")
	}
	if _, err := s.Create(id, 10, nil, Owner{}); !errors.Is(err, ErrObjectExists) {
		t.Fatalf("second create: %v", err)
	}
	for _, p := range []string{"0123", "456", "789"} {
		if _, err := w.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrShortWrite) {
		t.Fatalf("write past the end: %v", err)
	}
	if err := w.Seal(); err != nil {
		t.Fatal(err)
	}
	data, meta, ok := s.Read(id)
	if !ok || string(data) != "0123456789" || string(meta) != "meta" {
		t.Fatalf("read %q %q %v", data, meta, ok)
	}
}

func TestWriterShortSealAndAbortDropTheObject(t *testing.T) {
	s := newStore(t, Config{})
	w, err := s.Create(oid(1), 8, nil, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write([]byte("abc"))
	if err := w.Seal(); !errors.Is(err, ErrShortWrite) {
		t.Fatalf("short seal: %v", err)
	}
	w2, err := s.Create(oid(2), 8, nil, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	w2.Abort()
	if s.Contains(oid(1)) || s.Contains(oid(2)) || s.Usage().Used != 0 {
		t.Fatalf("dropped objects still there: %+v", s.Usage())
	}
	// The ids are free again.
	if w, err := s.Create(oid(1), 0, nil, Owner{}); err != nil || w.Seal() != nil {
		t.Fatalf("re-create: %v", err)
	}
}

func TestReaderHoldsTheObjectAgainstDeleteAndEviction(t *testing.T) {
	s := newStore(t, Config{Capacity: 1 << 20})
	big := bytes.Repeat([]byte{7}, 600<<10)
	if err := s.Put(oid(1), big, []byte("m"), Owner{}); err != nil {
		t.Fatal(err)
	}
	r, ok := s.OpenReader(oid(1))
	if !ok || r.DataSize() != int64(len(big)) || string(r.Metadata()) != "m" {
		t.Fatalf("open: %v", ok)
	}
	// Held: another 600 KiB object cannot evict it.
	if err := s.Put(oid(2), big, nil, Owner{}); !errors.Is(err, ErrOutOfMemory) {
		t.Fatalf("put over a held object: %v", err)
	}
	s.Delete(oid(1))
	var got []byte
	if err := r.View(100, 50, func(b []byte) error { got = append(got, b...); return nil }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big[100:150]) {
		t.Fatal("view bytes differ")
	}
	if err := r.View(int64(len(big))-1, 2, func([]byte) error { return nil }); err == nil {
		t.Fatal("view past the end allowed")
	}
	r.Close()
	// The delete asked for while it was held happens now.
	if s.Contains(oid(1)) {
		t.Fatal("deleted object kept after the reader closed")
	}
	if err := s.Put(oid(2), big, nil, Owner{}); err != nil {
		t.Fatal(err)
	}
}

func TestReaderAndWriterAfterClose(t *testing.T) {
	s := newStore(t, Config{})
	if err := s.Put(oid(1), []byte("abc"), nil, Owner{}); err != nil {
		t.Fatal(err)
	}
	r, _ := s.OpenReader(oid(1))
	w, err := s.Create(oid(2), 3, nil, Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.View(0, 1, func([]byte) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("view after close: %v", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	r.Close()
	w.Abort()
}
