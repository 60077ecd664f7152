package ipcframe

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	for i, body := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte{7}, 1000)} {
		if err := Write(&buf, int64(i+1), body); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf, 0)
	for i, want := range []int{0, 1, 1000} {
		f, err := r.Read()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != int64(i+1) || len(f.Body) != want {
			t.Fatalf("frame %d: type %d len %d", i, f.Type, len(f.Body))
		}
	}
	if _, err := r.Read(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
}

// The header layout is the one captured from stock Ray: the cookie's bytes
// are 00 00 00 00 00 59 41 52 on the wire.
func TestHeaderBytes(t *testing.T) {
	b := Append(nil, 7, []byte{1, 2})
	want := []byte{0, 0, 0, 0, 0, 0x59, 0x41, 0x52, 7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2}
	if !bytes.Equal(b, want) {
		t.Fatalf("got % x", b)
	}
}

func TestBadInput(t *testing.T) {
	good := Append(nil, 1, []byte("abc"))
	bad := append([]byte{}, good...)
	bad[0] = 1
	if _, err := NewReader(bytes.NewReader(bad), 0).Read(); !errors.Is(err, ErrBadCookie) {
		t.Fatalf("bad cookie: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(good), 2).Read(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(good[:len(good)-1]), 0).Read(); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated body: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(good[:10]), 0).Read(); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated header: %v", err)
	}
}
