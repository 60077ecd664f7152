package tunnel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// maxRequest bounds a CONNECT request with its headers.
const maxRequest = 8 << 10

// Proxy is an HTTP CONNECT proxy on 127.0.0.1 for a node's stock Ray
// processes: with Env in their environment, every gRPC connection they make
// arrives here as "CONNECT ip:port".
type Proxy struct {
	l      net.Listener
	dial   func(ctx context.Context, target string) (net.Conn, error)
	local  func(host string) bool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	conns  connSet
	once   sync.Once
	// HeaderTimeout bounds reading a request; DialTimeout bounds a dial.
	// Set them before Serve; defaults DefaultHeaderTimeout,
	// DefaultDialTimeout.
	HeaderTimeout, DialTimeout time.Duration
}

// NewProxy listens on 127.0.0.1:0. CONNECT targets whose host local
// reports true are dialled directly; others through dial (Agent.Dial on a
// provider, Hub.Dial on the head).
func NewProxy(dial func(ctx context.Context, target string) (net.Conn, error), local func(host string) bool) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tunnel: proxy: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Proxy{l: l, dial: dial, local: local, ctx: ctx, cancel: cancel,
		HeaderTimeout: DefaultHeaderTimeout, DialTimeout: DefaultDialTimeout}, nil
}

// Addr is the proxy's "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.l.Addr().String() }

// Serve accepts connections until ctx is done or Close; then it closes the
// proxy and returns nil.
func (p *Proxy) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { _ = p.Close() })
	defer stop()
	for {
		c, err := p.l.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("tunnel: proxy: %w", err)
		}
		if !p.conns.add(c) {
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serveConn(c)
			p.conns.remove(c)
		}()
	}
}

// Close stops the proxy and cuts its connections.
func (p *Proxy) Close() error {
	first := false
	p.once.Do(func() {
		first = true
		p.cancel()
		_ = p.l.Close()
		p.conns.closeAll()
	})
	p.wg.Wait()
	if !first {
		return ErrClosed
	}
	return nil
}

func (p *Proxy) serveConn(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(p.HeaderTimeout))
	br := bufio.NewReaderSize(io.LimitReader(c, maxRequest), 4096)
	target, err := readConnect(br)
	if err != nil {
		writeHTTP(c, "400 Bad Request", err.Error())
		_ = c.Close()
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.DialTimeout)
	var conn net.Conn
	host, _, _ := net.SplitHostPort(target)
	if p.local(host) {
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", target)
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrUnreachable, err)
		}
	} else {
		conn, err = p.dial(ctx, target)
	}
	cancel()
	if err != nil {
		writeHTTP(c, "502 Bad Gateway", err.Error())
		_ = c.Close()
		return
	}
	if !p.conns.add(conn) {
		_ = c.Close()
		return
	}
	defer p.conns.remove(conn)
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		_ = c.Close()
		_ = conn.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	var client net.Conn = c
	if n := br.Buffered(); n > 0 { // bytes the client sent after the request
		early, _ := br.Peek(n)
		client = &prefixConn{Conn: c, prefix: append([]byte(nil), early...)}
	}
	pipe(client, conn)
}

// readConnect parses "CONNECT host:port HTTP/1.x" and the header lines up
// to the blank line, and returns host:port.
func readConnect(br *bufio.Reader) (string, error) {
	line, err := readLine(br)
	if err != nil {
		return "", err
	}
	parts := strings.Split(line, " ")
	if len(parts) != 3 || !strings.HasPrefix(parts[2], "HTTP/1.") {
		return "", fmt.Errorf("%w: request line %q", ErrBadRequest, line)
	}
	if parts[0] != "CONNECT" {
		return "", fmt.Errorf("%w: method %q: only CONNECT is served", ErrBadRequest, parts[0])
	}
	target := parts[1]
	if _, _, err := splitTarget(target); err != nil {
		return "", err
	}
	for {
		h, err := readLine(br)
		if err != nil {
			return "", err
		}
		if h == "" {
			return target, nil
		}
	}
}

// readLine reads one CRLF (or LF) terminated line.
func readLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", fmt.Errorf("%w: line too long", ErrBadRequest)
		}
		return "", fmt.Errorf("%w: incomplete request: %w", ErrBadRequest, err)
	}
	return strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r"), nil
}

// writeHTTP sends an error response with reason as its body.
func writeHTTP(c net.Conn, status, reason string) {
	reason = strings.ReplaceAll(reason, "\n", " ")
	_, _ = fmt.Fprintf(c, "HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
		status, len(reason)+1, reason)
}

// Env is the environment that makes a stock Ray process (core worker,
// raylet client, driver) send every gRPC connection through the proxy at
// proxyAddr, except to the hosts in noProxy.
func Env(proxyAddr string, noProxy []string) []string {
	env := []string{"RAY_grpc_enable_http_proxy=1", "grpc_proxy=http://" + proxyAddr}
	if len(noProxy) > 0 {
		env = append(env, "no_grpc_proxy="+strings.Join(noProxy, ","))
	}
	return env
}
