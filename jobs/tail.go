package jobs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// MaxChunk is the most bytes of log one Tail message carries.
const MaxChunk = 20000

// Tail streams a submission's log to send, from its beginning: it waits
// while the job is pending, then sends the log as it grows, and returns
// nil once the job is terminal and its log has been read to the end. A
// job that ended before its entrypoint ran sends nothing.
func (m *Manager) Tail(ctx context.Context, id string, send func(chunk string) error) error {
	rec, err := m.Submission(ctx, id)
	if err != nil {
		return err
	}
	sid := rec.SubmissionID
	for rec.DriverPID == 0 {
		if rec.Status.Terminal() {
			return nil
		}
		if err := m.wait(ctx, sid); err != nil {
			return err
		}
		if rec, err = m.store.Get(ctx, sid); err != nil {
			return nil // deleted meanwhile
		}
	}
	f, err := os.Open(rec.LogPath)
	if err != nil {
		return err
	}
	defer f.Close()
	var pending []byte
	buf := make([]byte, 64<<10)
	for {
		// Read the status first: once terminal, what the file holds now
		// is all there will be.
		terminal := true
		if r, err := m.store.Get(ctx, sid); err == nil {
			terminal = r.Status.Terminal()
		}
		for {
			n, err := f.Read(buf)
			pending = append(pending, buf[:n]...)
			for len(pending) >= MaxChunk {
				var c string
				c, pending = cutChunk(pending, false)
				if err := send(c); err != nil {
					return err
				}
			}
			if err == io.EOF || n == 0 {
				break
			}
			if err != nil {
				return err
			}
		}
		for len(pending) > 0 {
			c, rest := cutChunk(pending, terminal)
			if c == "" {
				break // an incomplete UTF-8 sequence waits for its end
			}
			pending = rest
			if err := send(c); err != nil {
				return err
			}
		}
		if terminal {
			return nil
		}
		if err := m.wait(ctx, sid); err != nil {
			return err
		}
	}
}

// wait returns at the job's next update or after the poll interval.
func (m *Manager) wait(ctx context.Context, sid string) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-m.changes(sid):
	case <-m.clock.After(m.cfg.PollInterval):
	}
	return nil
}

// cutChunk takes the first message off buf: at most MaxChunk bytes, cut
// after a newline where one falls in the window, never inside a UTF-8
// sequence; an incomplete sequence at the end stays in rest unless final.
// Invalid bytes become U+FFFD (messages are text frames).
func cutChunk(buf []byte, final bool) (chunk string, rest []byte) {
	if len(buf) == 0 {
		return "", buf
	}
	n := len(buf)
	if n > MaxChunk {
		n = MaxChunk
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			n = i + 1
		} else {
			n = runeStart(buf, n)
		}
	} else if !final {
		n = runeStart(buf, n)
	}
	if n == 0 {
		if !final && len(buf) < utf8.UTFMax {
			return "", buf
		}
		n = min(len(buf), MaxChunk) // garbage, not a sequence: send it replaced
	}
	return strings.ToValidUTF8(string(buf[:n]), "\uFFFD"), buf[n:]
}

// runeStart backs n off so that buf[:n] does not end inside a UTF-8
// sequence that continues past n (or is still incomplete at the end).
func runeStart(buf []byte, n int) int {
	for back := 1; back <= utf8.UTFMax && n-back >= 0; back++ {
		c := buf[n-back]
		if c < utf8.RuneSelf {
			return n // ASCII: nothing open
		}
		if utf8.RuneStart(c) {
			need := 0
			switch {
			case c&0xE0 == 0xC0:
				need = 2
			case c&0xF0 == 0xE0:
				need = 3
			case c&0xF8 == 0xF0:
				need = 4
			default:
				return n // not a valid leading byte
			}
			if back < need {
				return n - back // the sequence starting there is cut
			}
			return n
		}
	}
	return n
}

// lastLines returns the last n lines of a file, at most maxChars of them.
func lastLines(path string, n, maxChars int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	size := st.Size()
	window := int64(maxChars * utf8.UTFMax)
	off := max(size-window, 0)
	b := make([]byte, size-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	s := strings.TrimRight(strings.ToValidUTF8(string(b), "\uFFFD"), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	s = strings.Join(lines, "\n")
	if r := []rune(s); len(r) > maxChars {
		s = string(r[len(r)-maxChars:])
	}
	return s
}
