package raylet

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"testing"
)

// pipe returns the two ends of an in-memory connection, closed at cleanup.
func pipe(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	w, r := net.Pipe()
	t.Cleanup(func() { w.Close(); r.Close() })
	return w, bufio.NewReader(r)
}

func TestFrameRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		header map[string]any
		blobs  []blob
	}{
		{"no blobs", map[string]any{"type": "ping"}, nil},
		{"one blob in one chunk", map[string]any{"type": "execute", "task": "f"}, []blob{{[]byte("hello")}}},
		{"blobs in several chunks", map[string]any{"type": "execute", "n": 3.0}, []blob{
			{[]byte("ab"), []byte("cd"), []byte("e")},
			{},
			{[]byte{}, []byte("x"), nil, []byte("yz")},
			{[]byte{}},
		}},
		{"nested header", map[string]any{"env": map[string]any{"A": "1"}, "list": []any{"a", 2.0}}, []blob{{bytes.Repeat([]byte{0}, 70000)}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, r := pipe(t)
			errc := make(chan error, 1)
			go func() { errc <- writeFrame(w, tc.header, tc.blobs) }()
			f, err := readFrame(r)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				if k == "blobs" {
					continue
				}
				if fmt.Sprint(f.Header[k]) != fmt.Sprint(v) {
					t.Errorf("header[%q] = %v, want %v", k, f.Header[k], v)
				}
			}
			if len(f.Blobs) != len(tc.blobs) {
				t.Fatalf("%d blobs, want %d", len(f.Blobs), len(tc.blobs))
			}
			for i, b := range tc.blobs {
				if want := bytes.Join(b, nil); !bytes.Equal(f.Blobs[i], want) {
					t.Errorf("blob %d = %q, want %q", i, f.Blobs[i], want)
				}
			}
			if s := f.str("type"); s != fmt.Sprint(tc.header["type"]) && tc.header["type"] != nil {
				t.Errorf("str(type) = %q", s)
			}
		})
	}
}

// TestFrameStream writes random frames back to back and reads them in order.
func TestFrameStream(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	type sent struct {
		seq   float64
		blobs [][]byte
	}
	var frames []sent
	var chunked [][]blob
	for i := 0; i < 50; i++ {
		s := sent{seq: float64(i)}
		var bl []blob
		for n := rng.Intn(4); n > 0; n-- {
			var b blob
			var whole []byte
			for c := rng.Intn(4); c > 0; c-- {
				chunk := make([]byte, rng.Intn(5000))
				rng.Read(chunk)
				b = append(b, chunk)
				whole = append(whole, chunk...)
			}
			bl = append(bl, b)
			s.blobs = append(s.blobs, whole)
		}
		frames = append(frames, s)
		chunked = append(chunked, bl)
	}
	w, r := pipe(t)
	errc := make(chan error, 1)
	go func() {
		for i, f := range frames {
			if err := writeFrame(w, map[string]any{"seq": f.seq}, chunked[i]); err != nil {
				errc <- err
				return
			}
		}
		errc <- w.Close()
	}()
	for i, want := range frames {
		f, err := readFrame(r)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.Header["seq"] != want.seq || len(f.Blobs) != len(want.blobs) {
			t.Fatalf("frame %d: seq %v with %d blobs, want %v with %d", i, f.Header["seq"], len(f.Blobs), want.seq, len(want.blobs))
		}
		for j := range want.blobs {
			if !bytes.Equal(f.Blobs[j], want.blobs[j]) {
				t.Fatalf("frame %d blob %d differs", i, j)
			}
		}
	}
	if _, err := readFrame(r); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v, want EOF", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// rawFrame builds a frame by hand: a length, a header and a payload.
func rawFrame(length uint32, header string, payload []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, length)
	return append(append(out, header...), payload...)
}

// frameOf is rawFrame with the header's true length.
func frameOf(header string, payload []byte) []byte {
	return rawFrame(uint32(len(header)), header, payload)
}

func TestReadFrameMalformed(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{"header length over the limit", rawFrame(maxHeader+1, "", nil), ErrFrame},
		{"header length of 4 GiB", rawFrame(0xffffffff, "", nil), ErrFrame},
		{"header not JSON", frameOf("nope!", nil), ErrFrame},
		{"header not an object", frameOf("[]", nil), ErrFrame},
		{"negative blob size", frameOf(`{"blobs":[-1]}`, nil), ErrFrame},
		{"blob size not a number", frameOf(`{"blobs":["3"]}`, []byte("abc")), ErrFrame},
		{"truncated length", []byte{1, 0}, io.ErrUnexpectedEOF},
		{"truncated header", rawFrame(10, `{"a":`, nil), io.ErrUnexpectedEOF},
		{"truncated blob", frameOf(`{"blobs":[4]}`, []byte("ab")), io.ErrUnexpectedEOF},
		{"empty stream", nil, io.EOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := readFrame(bufio.NewReader(bytes.NewReader(tc.data)))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("readFrame = %v, %v; want error %v", f, err, tc.wantErr)
			}
		})
	}
}

func TestReadFrameUntrustedBlobSize(t *testing.T) {
	tests := []struct {
		name   string
		header string
	}{
		{"larger than memory", `{"blobs":[1e18]}`},
		{"not an integer", `{"blobs":[2.5]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := frameOf(tc.header, []byte("abc"))
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						err = fmt.Errorf("panic: %v", p)
					}
				}()
				_, err = readFrame(bufio.NewReader(bytes.NewReader(data)))
			}()
			if !errors.Is(err, ErrFrame) {
				t.Fatalf("readFrame = %v, want ErrFrame", err)
			}
		})
	}
}
