package clientproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

// ErrServerStart means a session's specific server did not come up.
var ErrServerStart = errors.New("ray client specific server did not start")

// specific is one session's stock Ray Client server process.
type specific struct {
	clientID string
	port     int
	cmd      *exec.Cmd
	conn     *grpc.ClientConn
	// exited is closed once the process has been reaped.
	exited chan struct{}
	// ready is closed once the server answers (or failed to: err set).
	ready chan struct{}
	err   error
	// streams counts the open Datapath streams; gen numbers them, so that
	// a delayed cleanup can tell a reconnect happened since.
	streams int
	gen     uint64
	grace   time.Duration
}

// freePort picks a loopback port from the ephemeral range (never gray's
// 10002-19999 worker ports).
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// start launches the process and waits until its gRPC port is ready.
func (p *Proxy) start(ctx context.Context, s *specific) {
	defer close(s.ready)
	port, err := freePort()
	if err != nil {
		s.err = fmt.Errorf("%w: %w", ErrServerStart, err)
		close(s.exited)
		return
	}
	s.port = port
	logBase := filepath.Join(p.cfg.LogDir, fmt.Sprintf("ray_client_server_%d", port))
	stdout, _ := os.Create(logBase + ".out")
	stderr, _ := os.Create(logBase + ".err")
	cmd := exec.Command(p.cfg.Python, "-m", "ray.util.client.server",
		"--address="+p.cfg.GCSAddress, "--host=127.0.0.1", fmt.Sprintf("--port=%d", port),
		"--mode=specific-server")
	cmd.Env = os.Environ()
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.err = fmt.Errorf("%w: %w", ErrServerStart, err)
		close(s.exited)
		closeFiles(stdout, stderr)
		return
	}
	s.cmd = cmd
	go func() {
		_ = cmd.Wait()
		closeFiles(stdout, stderr)
		close(s.exited)
		p.reaped(s)
	}()
	conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", port),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}),
			grpc.MaxCallRecvMsgSize(p.cfg.MaxMessageSize), grpc.MaxCallSendMsgSize(p.cfg.MaxMessageSize)))
	if err != nil {
		s.err = fmt.Errorf("%w: %w", ErrServerStart, err)
		p.kill(s)
		return
	}
	s.conn = conn
	wctx, cancel := context.WithTimeout(ctx, p.cfg.StartTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.exited:
			cancel()
		case <-wctx.Done():
		}
	}()
	conn.Connect()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		if st == connectivity.TransientFailure {
			conn.ResetConnectBackoff()
		}
		if !conn.WaitForStateChange(wctx, st) {
			select {
			case <-s.exited:
				s.err = fmt.Errorf("%w: the process exited (%s); see %s.err", ErrServerStart, cmd.ProcessState, logBase)
			default:
				s.err = fmt.Errorf("%w within %s; see %s.err", ErrServerStart, p.cfg.StartTimeout, logBase)
			}
			p.kill(s)
			return
		}
	}
	p.log.Info("ray client specific server started", "client_id", s.clientID, "port", port, "pid", cmd.Process.Pid)
}

// kill stops the process (SIGTERM, then SIGKILL) and waits until reaped.
func (p *Proxy) kill(s *specific) {
	if s.conn != nil {
		_ = s.conn.Close()
	}
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
		return
	case <-time.After(5 * time.Second):
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

func closeFiles(fs ...*os.File) {
	for _, f := range fs {
		if f != nil {
			_ = f.Close()
		}
	}
}
