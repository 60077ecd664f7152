package wanharness

import (
	"crypto/tls"
	"io"
	"os"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"

	"github.com/gray-cluster/gray/internal/linkemu"
	"github.com/gray-cluster/gray/transport"
)

func TestScratchQlog(t *testing.T) {
	if os.Getenv("SCRATCH2") == "" {
		t.Skip()
	}
	const size = 32 << 20
	ca, _ := transport.NewCA("x")
	cert, _ := ca.NewNodeCert("server")
	conf := &quic.Config{
		InitialStreamReceiveWindow: 4 << 20, MaxStreamReceiveWindow: 32 << 20,
		InitialConnectionReceiveWindow: 8 << 20, MaxConnectionReceiveWindow: 128 << 20,
		Tracer: qlog.DefaultConnectionTracer,
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"x"}}, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept(t.Context())
		if err != nil {
			return
		}
		for {
			s, err := c.AcceptStream(t.Context())
			if err != nil {
				return
			}
			go func() {
				op := make([]byte, 1)
				io.ReadFull(s, op)
				buf := make([]byte, size)
				if op[0] == 'u' {
					io.ReadFull(s, buf)
					s.Write([]byte{1})
				} else {
					s.Write(buf)
				}
				s.Close()
			}()
		}
	}()
	link := linkemu.Link{Delay: 40 * time.Millisecond, Bandwidth: 100e6, InOrder: true}
	p, _ := linkemu.NewUDPProxy("127.0.0.1:0", ln.Addr().String(), linkemu.Config{Up: link, Down: link, Seed: 1})
	defer p.Close()
	p.Start(t.Context())
	c, err := quic.DialAddr(t.Context(), p.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"x"}}, conf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	for _, op := range []byte(os.Getenv("OPS")) {
		start := time.Now()
		s, _ := c.OpenStreamSync(t.Context())
		s.Write([]byte{op})
		buf := make([]byte, size)
		if op == 'u' {
			s.Write(buf)
			io.ReadFull(s, buf[:1])
		} else {
			io.ReadFull(s, buf)
		}
		s.Close()
		t.Logf("%c: %.2f MiB/s", op, float64(size)/time.Since(start).Seconds()/(1<<20))
	}
}
