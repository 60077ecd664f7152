package clientproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/gray-cluster/gray/gcs"
)

// Config configures the proxy.
type Config struct {
	// Addr is the Ray Client listen address.
	Addr string
	// GCSAddress is the native GCS the sessions' drivers join.
	GCSAddress string
	// Python runs the specific servers (the native workers' interpreter).
	Python string
	// LogDir receives ray_client_server_PORT.{out,err}.
	LogDir string
	// KV answers working_dir uploads made before a session's server is up.
	KV gcs.KV
	// StartTimeout bounds a specific server's start (default 60s).
	StartTimeout time.Duration
	// DefaultGrace is the reconnect grace period when init gives none.
	DefaultGrace   time.Duration
	MaxMessageSize int
	Logger         *slog.Logger
}

// Proxy is the Ray Client front end of the native-sessions mode.
type Proxy struct {
	cfg  Config
	log  *slog.Logger
	grpc *grpc.Server
	ln   net.Listener
	ctx  context.Context
	stop context.CancelFunc

	mu       sync.Mutex
	sessions map[string]*specific
	wg       sync.WaitGroup
}

// New builds a proxy; Listen binds it.
func New(cfg Config) *Proxy {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	if cfg.DefaultGrace <= 0 {
		cfg.DefaultGrace = 30 * time.Second
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 1<<31 - 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{cfg: cfg, log: cfg.Logger.With("component", "clientproxy"), ctx: ctx, stop: cancel,
		sessions: map[string]*specific{}}
	p.grpc = grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(p.handle),
		grpc.MaxRecvMsgSize(cfg.MaxMessageSize), grpc.MaxSendMsgSize(cfg.MaxMessageSize))
	return p
}

// Listen binds the port and starts serving.
func (p *Proxy) Listen() (net.Addr, error) {
	ln, err := net.Listen("tcp", p.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("ray client port: %w", err)
	}
	p.ln = ln
	go func() { _ = p.grpc.Serve(ln) }()
	return ln.Addr(), nil
}

// Close stops serving and stops every session's server.
func (p *Proxy) Close() error {
	p.stop()
	p.grpc.Stop()
	p.mu.Lock()
	all := make([]*specific, 0, len(p.sessions))
	for _, s := range p.sessions {
		all = append(all, s)
	}
	p.sessions = map[string]*specific{}
	p.mu.Unlock()
	for _, s := range all {
		<-s.ready
		p.kill(s)
	}
	p.wg.Wait()
	return nil
}

// Sessions reports the pids of the running specific servers by client_id.
func (p *Proxy) Sessions() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for id, s := range p.sessions {
		if s.cmd != nil && s.cmd.Process != nil {
			out[id] = s.cmd.Process.Pid
		}
	}
	return out
}

func (p *Proxy) reaped(s *specific) {
	p.forget(s)
	p.log.Info("ray client specific server stopped", "client_id", s.clientID, "port", s.port)
}

func clientID(ctx context.Context) (string, metadata.MD) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("client_id"); len(v) > 0 {
		return v[0], md
	}
	return "", md
}

// handle relays one call of any of the three services.
func (p *Proxy) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	ctx := ss.Context()
	id, md := clientID(ctx)
	if id == "" {
		return status.Error(codes.InvalidArgument, "ray client call without client_id metadata")
	}
	switch {
	case strings.HasSuffix(method, "/Datapath"):
		return p.datapath(ss, id, md, method)
	case strings.HasSuffix(method, "/Logstream"):
		s := p.waitSession(ctx, id)
		if s == nil {
			return status.Errorf(codes.NotFound, "no ray client session %s", id)
		}
		return relay(ss, s, md, method, nil, nil)
	}
	// Unary RayletDriver call: one request frame.
	var req []byte
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	p.mu.Lock()
	s := p.sessions[id]
	p.mu.Unlock()
	ready := s != nil && isReady(s)
	// PING, and before the session's server is up the working_dir
	// upload's KV calls, are answered here, as the proxier does.
	if resp, ok, err := p.local(ctx, method, req, ready); ok {
		if err != nil {
			return err
		}
		return ss.SendMsg(resp)
	}
	if !ready {
		if s = p.waitSession(ctx, id); s == nil {
			return status.Errorf(codes.NotFound, "no ray client session %s", id)
		}
	}
	return relay(ss, s, md, method, &req, nil)
}

func isReady(s *specific) bool {
	select {
	case <-s.ready:
		return s.err == nil
	default:
		return false
	}
}

// waitSession waits for the session's server to be ready (nil: none).
func (p *Proxy) waitSession(ctx context.Context, id string) *specific {
	p.mu.Lock()
	s := p.sessions[id]
	p.mu.Unlock()
	if s == nil {
		return nil
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil
	}
	if s.err != nil {
		return nil
	}
	return s
}

// relay forwards one call to the session's server; first, when set, is a
// request frame already read from the client; onReq sees every request.
func relay(ss grpc.ServerStream, s *specific, md metadata.MD, method string, first *[]byte, onReq func([]byte)) error {
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	out := metadata.NewOutgoingContext(ctx, md.Copy())
	cs, err := s.conn.NewStream(out, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		if first != nil {
			if err := cs.SendMsg(first); err != nil {
				errc <- nil
				return
			}
		}
		for {
			var f []byte
			if err := ss.RecvMsg(&f); err != nil {
				_ = cs.CloseSend()
				if errors.Is(err, io.EOF) {
					errc <- nil
				} else {
					errc <- err
				}
				return
			}
			if onReq != nil {
				onReq(f)
			}
			if err := cs.SendMsg(&f); err != nil {
				errc <- nil // the response side reports the status
				return
			}
		}
	}()
	sentHeader := false
	for {
		var f []byte
		if err := cs.RecvMsg(&f); err != nil {
			if tr := cs.Trailer(); len(tr) > 0 {
				ss.SetTrailer(tr)
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if !sentHeader {
			if h, err := cs.Header(); err == nil && len(h) > 0 {
				_ = ss.SetHeader(h)
			}
			sentHeader = true
		}
		if err := ss.SendMsg(&f); err != nil {
			return err
		}
	}
}

// hasField reports whether a message frame sets top-level field num.
func hasField(b []byte, num protowire.Number) bool {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return false
		}
		if n == num {
			return true
		}
		b = b[l:]
		m := protowire.ConsumeFieldValue(n, typ, b)
		if m < 0 {
			return false
		}
		b = b[m:]
	}
	return false
}

// Field numbers of DataRequest's oneof members the proxy watches.
const (
	fieldInit              protowire.Number = 6
	fieldConnectionCleanup protowire.Number = 8
)
