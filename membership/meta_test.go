package membership

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestMetaRoundTrip(t *testing.T) {
	m := Meta{NodeID: "r1", Role: RoleRaylet, Region: "eu", ControlAddr: "10.0.0.1:9000",
		GPUs: "8xH100", Labels: map[string]string{"k": "v"}}
	for _, leaving := range []bool{false, true} {
		b, err := encodeMeta(m, leaving)
		if err != nil {
			t.Fatal(err)
		}
		got, lv, err := decodeMeta(b)
		if err != nil || !got.Equal(m) || lv != leaving {
			t.Fatalf("decode(%s) = %+v, %v, %v", b, got, lv, err)
		}
	}
	if _, _, err := decodeMeta([]byte(`{"id":"x","r":"worker"}`)); !errors.Is(err, ErrInvalidMeta) {
		t.Errorf("foreign role: %v", err)
	}
	if _, _, err := decodeMeta(nil); !errors.Is(err, ErrInvalidMeta) {
		t.Errorf("empty meta: %v", err)
	}
}

func TestMetaValidation(t *testing.T) {
	ok := Meta{NodeID: "r1", Role: RoleHead}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	bad := ok
	bad.Role = "worker"
	if err := bad.validate(); !errors.Is(err, ErrInvalidMeta) {
		t.Errorf("bad role: %v", err)
	}
	big := ok
	big.GPUs = strings.Repeat("x", MetaMaxSize)
	err := big.validate()
	if !errors.Is(err, ErrMetaTooLarge) || !strings.Contains(err.Error(), "limit is 512") {
		t.Errorf("too large: %v", err)
	}
	// The check reserves room for the leaving flag: a meta that fits only
	// without it is rejected up front rather than failing at Leave.
	for n := MetaMaxSize - 60; n < MetaMaxSize; n++ {
		m := ok
		m.GPUs = strings.Repeat("x", n)
		plain, _ := encodeMeta(m, false)
		withFlag, _ := encodeMeta(m, true)
		if err := m.validate(); (err == nil) != (len(withFlag) <= MetaMaxSize) || len(plain) > len(withFlag) {
			t.Fatalf("n=%d: validate=%v plain=%d flagged=%d", n, err, len(plain), len(withFlag))
		}
	}
}

func TestConfigValidation(t *testing.T) {
	base := Config{Name: "n", Meta: Meta{Role: RoleRaylet}, SecretKey: testKey}
	cfg, err := base.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Meta.NodeID != "n" || cfg.DeadAfter != 60*time.Second || cfg.Profile != ProfileWAN {
		t.Errorf("defaults: %+v", cfg)
	}
	for name, edit := range map[string]func(*Config){
		"no key":      func(c *Config) { c.SecretKey = nil },
		"short key":   func(c *Config) { c.SecretKey = []byte("short") },
		"no name":     func(c *Config) { c.Name = "" },
		"bad role":    func(c *Config) { c.Meta.Role = "" },
		"bad port":    func(c *Config) { c.BindPort = 70000 },
		"bad profile": func(c *Config) { c.Profile = 9 },
	} {
		c := base
		edit(&c)
		if _, err := New(c); !errors.Is(err, ErrInvalidConfig) && !errors.Is(err, ErrInvalidMeta) {
			t.Errorf("%s: New = %v, want a config/meta error", name, err)
		}
	}
	m, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Join([]string{"127.0.0.1:1"}); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Join before Start = %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v", err)
	}
}

func TestSRTT(t *testing.T) {
	var p peer
	p.observeRTT(80 * time.Millisecond)
	if p.srtt != 80*time.Millisecond {
		t.Fatalf("first sample: %v", p.srtt)
	}
	p.observeRTT(160 * time.Millisecond)
	if p.srtt != 90*time.Millisecond {
		t.Fatalf("smoothed: %v", p.srtt)
	}
	p.observeRTT(0)
	if p.srtt != 90*time.Millisecond {
		t.Fatalf("zero sample changed srtt: %v", p.srtt)
	}
}

func TestSlogBridge(t *testing.T) {
	var buf bytes.Buffer
	w := &slogWriter{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if _, err := w.Write([]byte("[WARN] memberlist: Refuting a suspect message\n")); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "ml_level=WARN") ||
		!strings.Contains(out, `msg="Refuting a suspect message"`) {
		t.Errorf("bridged line: %s", out)
	}
}
