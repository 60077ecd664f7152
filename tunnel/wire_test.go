package tunnel

import (
	"bytes"
	"errors"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	t.Parallel()
	for _, h := range []header{
		{op: opDial, target: "127.64.1.2:6379"},
		{op: opDial, target: "[::1]:80"},
		{op: opListen},
		{op: opBack, id: 1<<64 - 1},
		{op: opOpen, id: 7, target: "10.0.0.1:65535"},
		{op: opPing},
	} {
		got, err := readStreamHeader(bytes.NewReader(h.streamHeader()))
		if err != nil || got != h {
			t.Errorf("round trip of %+v = %+v, %v", h, got, err)
		}
	}
}

func TestHeaderRejects(t *testing.T) {
	t.Parallel()
	for name, b := range map[string][]byte{
		"no magic":       []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
		"short frame":    append([]byte(Magic), 0, 1, opDial),
		"oversized":      append([]byte(Magic), 0x02, 0x01),
		"unknown op":     header{op: 42}.streamHeader(),
		"port 0":         header{op: opDial, target: "1.2.3.4:0"}.streamHeader(),
		"port 70000":     header{op: opDial, target: "1.2.3.4:70000"}.streamHeader(),
		"port +80":       header{op: opDial, target: "1.2.3.4:+80"}.streamHeader(),
		"no host":        header{op: opDial, target: ":80"}.streamHeader(),
		"no port":        header{op: opOpen, target: "1.2.3.4"}.streamHeader(),
		"back w/ target": header{op: opBack, target: "1.2.3.4:5"}.streamHeader(),
	} {
		if _, err := readStreamHeader(bytes.NewReader(b)); !errors.Is(err, ErrBadRequest) {
			t.Errorf("%s: %v, want ErrBadRequest", name, err)
		}
	}
}

func TestStatusRoundTrip(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	_ = writeStatus(&b, stOK, "")
	_ = writeErrStatus(&b, ErrNoRoute)
	_ = writeStatus(&b, stUnreachable, string(bytes.Repeat([]byte("x"), 1000)))
	_ = writeStatus(&b, 200, "what")
	if err := readStatus(&b); err != nil {
		t.Fatal(err)
	}
	if err := readStatus(&b); !errors.Is(err, ErrNoRoute) {
		t.Fatalf("got %v", err)
	}
	if err := readStatus(&b); !errors.Is(err, ErrUnreachable) || len(err.Error()) != maxMessage {
		t.Fatalf("got %v", err)
	}
	if err := readStatus(&b); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("unknown code: %v", err)
	}
}

// FuzzHeader: the parser never panics, and what it accepts re-encodes to
// the same bytes.
func FuzzHeader(f *testing.F) {
	f.Add(header{op: opDial, target: "127.64.0.2:80"}.streamHeader())
	f.Add(header{op: opBack, id: 3}.streamHeader())
	f.Add(header{op: opListen}.streamHeader())
	f.Add(append([]byte(Magic), 0xff, 0xff))
	f.Add([]byte("PRI * HTTP/2.0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := readStreamHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		enc := h.streamHeader()
		if !bytes.HasPrefix(b, enc) {
			t.Fatalf("accepted %q as %+v, which encodes to %q", b, h, enc)
		}
		if err := h.validate(); err != nil {
			t.Fatalf("accepted an invalid header %+v: %v", h, err)
		}
	})
}
