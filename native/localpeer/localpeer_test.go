package localpeer

import (
	"net"
	"testing"
)

func TestLocalPeersPass(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(raw, nil)
	defer l.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			done <- c
		}
		close(done)
	}()
	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := <-done; got == nil {
		t.Fatal("a loopback peer was refused")
	} else {
		got.Close()
	}
}

func TestIsLocal(t *testing.T) {
	l := Wrap(nil, nil)
	if !l.isLocal(net.ParseIP("127.0.0.1")) || !l.isLocal(net.ParseIP("::1")) {
		t.Fatal("loopback is not local")
	}
	if l.isLocal(net.ParseIP("203.0.113.7")) {
		t.Fatal("a documentation address is local")
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !l.isLocal(n.IP) {
			t.Fatalf("own address %s is not local", n.IP)
		}
	}
}

type fakeConn struct {
	net.Conn
	remote net.Addr
	closed bool
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.remote }
func (c *fakeConn) Close() error         { c.closed = true; return nil }

type fakeListener struct {
	net.Listener
	conns []*fakeConn
}

func (l *fakeListener) Accept() (net.Conn, error) {
	c := l.conns[0]
	l.conns = l.conns[1:]
	return c, nil
}

func TestOtherHostsAreClosed(t *testing.T) {
	far := &fakeConn{remote: &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 5000}}
	near := &fakeConn{remote: &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5001}}
	raw, _ := net.Listen("tcp", "127.0.0.1:0")
	defer raw.Close()
	l := Wrap(&fakeListener{Listener: raw, conns: []*fakeConn{far, near}}, nil)
	c, err := l.Accept()
	if err != nil || c != net.Conn(near) {
		t.Fatalf("accepted %v, %v", c, err)
	}
	if !far.closed || near.closed {
		t.Fatalf("far closed %v, near closed %v", far.closed, near.closed)
	}
}
