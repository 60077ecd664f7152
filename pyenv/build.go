package pyenv

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ReadyFile is written into an environment's directory once it is built.
const ReadyFile = ".gray-ready"

// basePth is the .pth file that layers the base interpreter's packages
// behind the env's own.
const basePth = "_gray_base.pth"

// Env is a built environment.
type Env struct {
	// Dir is the environment's directory (a sandbox binds it read-only).
	Dir string
	// Python is its interpreter: the worker command's executable.
	Python string
	// Hash names it in the cache.
	Hash string
}

// Builder builds and caches environments under Root on the interpreter
// Python. Safe for concurrent use; several Builders (processes) may share
// a Root.
type Builder struct {
	root   string
	python string
	log    *slog.Logger

	mu      sync.Mutex
	base    *baseInfo
	flights map[string]*flight
	ready   map[string]Env
	builds  atomic.Int64
}

type flight struct {
	done chan struct{}
	env  Env
	err  error
}

// baseInfo is what the base interpreter says about itself.
type baseInfo struct {
	Executable string   `json:"executable"`
	Version    string   `json:"version"`
	Site       []string `json:"site"`
}

// NewBuilder caches environments under root (made absolute) built on python.
func NewBuilder(root, python string, log *slog.Logger) (*Builder, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("pyenv: root %q: %w", root, err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Builder{root: abs, python: python, log: log.With("component", "pyenv"),
		flights: map[string]*flight{}, ready: map[string]Env{}}, nil
}

// Builds is how many environments this Builder has built (cache hits and
// environments another process built do not count).
func (b *Builder) Builds() int64 { return b.builds.Load() }

// Root is where environments are cached.
func (b *Builder) Root() string { return b.root }

// Ensure returns the environment of spec, building it the first time.
// out, when set, is given each line of the build's output as it comes
// (only to the caller that builds; others wait for its result). A caller
// whose ctx ends stops waiting; a build its ctx cut short is not cached.
func (b *Builder) Ensure(ctx context.Context, spec Spec, out func(line string)) (Env, error) {
	if spec.IsZero() {
		return Env{}, fmt.Errorf("%w: no packages", ErrSpec)
	}
	base, err := b.baseInfo(ctx)
	if err != nil {
		return Env{}, err
	}
	hash := spec.Hash(base.Executable, base.Version)
	for {
		b.mu.Lock()
		if env, ok := b.ready[hash]; ok {
			b.mu.Unlock()
			return env, nil
		}
		f := b.flights[hash]
		if f == nil {
			f = &flight{done: make(chan struct{})}
			b.flights[hash] = f
			b.mu.Unlock()
			f.env, f.err = b.build(ctx, spec, hash, base, out)
			b.mu.Lock()
			delete(b.flights, hash)
			if f.err == nil {
				b.ready[hash] = f.env
			}
			b.mu.Unlock()
			close(f.done)
			return f.env, f.err
		}
		b.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return Env{}, fmt.Errorf("%w: waiting for the environment: %w", ErrBuild, context.Cause(ctx))
		}
		if f.err == nil {
			return f.env, nil
		}
		var be *BuildError
		if errors.As(f.err, &be) && be.Cancelled && ctx.Err() == nil {
			continue // the caller that built gave up; this one still wants it
		}
		return Env{}, f.err
	}
}

// Lookup returns spec's environment if this Builder has it ready.
func (b *Builder) Lookup(spec Spec) (Env, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.base == nil {
		return Env{}, false
	}
	env, ok := b.ready[spec.Hash(b.base.Executable, b.base.Version)]
	return env, ok
}

const baseProbe = `import json, site, sys
print(json.dumps({"executable": sys.executable, "version": sys.version, "site": site.getsitepackages()}))`

func (b *Builder) baseInfo(ctx context.Context) (*baseInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.base != nil {
		return b.base, nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	raw, err := exec.CommandContext(ctx, b.python, "-c", baseProbe).Output()
	if err != nil {
		return nil, fmt.Errorf("%w: ask %s about itself: %w", ErrBuild, b.python, err)
	}
	var info baseInfo
	if err := json.Unmarshal(raw, &info); err != nil || info.Executable == "" {
		return nil, fmt.Errorf("%w: read what %s says about itself: %v", ErrBuild, b.python, err)
	}
	b.base = &info
	return b.base, nil
}

// BuildError is a failed step of a build, with the output of its command.
type BuildError struct {
	Step   string
	Output string
	Err    error
	// Cancelled is set when the build's context ended it.
	Cancelled bool
}

func (e *BuildError) Error() string {
	msg := fmt.Sprintf("%v: %s: %v", ErrBuild, e.Step, e.Err)
	if o := strings.TrimSpace(e.Output); o != "" {
		msg += "\n" + o
	}
	return msg
}

// Unwrap makes a BuildError an ErrBuild.
func (e *BuildError) Unwrap() error { return ErrBuild }

// build makes spec's environment in Root/hash, under a lock file so that
// one process builds it; another finding it ready takes it as it is.
func (b *Builder) build(ctx context.Context, spec Spec, hash string, base *baseInfo, out func(string)) (Env, error) {
	dir := filepath.Join(b.root, hash)
	env := Env{Dir: dir, Python: filepath.Join(dir, "bin", "python"), Hash: hash}
	if err := os.MkdirAll(b.root, 0o755); err != nil {
		return Env{}, &BuildError{Step: "make the cache dir", Err: err}
	}
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return Env{}, &BuildError{Step: "lock " + dir, Err: err, Cancelled: ctx.Err() != nil}
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(dir, ReadyFile)); err == nil {
		return env, nil
	}
	start := time.Now()
	b.log.Info("building python env", "tool", spec.Tool, "packages", spec.Packages, "dir", dir)
	if err := b.steps(ctx, spec, env, base, out); err != nil {
		_ = os.RemoveAll(dir)
		b.log.Info("python env build failed", "dir", dir, "err", firstLine(err.Error()))
		return Env{}, err
	}
	b.builds.Add(1)
	b.log.Info("built python env", "dir", dir, "took", time.Since(start).Round(time.Millisecond))
	return env, nil
}

func (b *Builder) steps(ctx context.Context, spec Spec, env Env, base *baseInfo, out func(string)) error {
	dir := env.Dir
	if err := os.RemoveAll(dir); err != nil { // what a crashed build left
		return &BuildError{Step: "clear " + dir, Err: err}
	}
	run := func(step string, argv ...string) error { return runStep(ctx, dir, out, step, argv...) }
	if err := run("create the virtualenv", b.python, "-m", "venv", "--without-pip", dir); err != nil {
		return err
	}
	purelib, err := exec.CommandContext(ctx, env.Python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").Output()
	if err != nil {
		return &BuildError{Step: "find the env's site-packages", Err: err, Cancelled: ctx.Err() != nil}
	}
	// The base's site dirs go after the env's own (and their .pth files
	// run): its packages stay importable, the env's pins come first.
	var pth strings.Builder
	for _, s := range base.Site {
		q, _ := json.Marshal(s) // a JSON string is a Python string literal
		fmt.Fprintf(&pth, "import site; site.addsitedir(%s)\n", q)
	}
	if err := os.WriteFile(filepath.Join(strings.TrimSpace(string(purelib)), basePth), []byte(pth.String()), 0o644); err != nil {
		return &BuildError{Step: "layer the base interpreter's packages", Err: err}
	}
	req := filepath.Join(dir, "requirements.txt")
	if err := os.WriteFile(req, []byte(strings.Join(spec.Packages, "\n")+"\n"), 0o644); err != nil {
		return &BuildError{Step: "write requirements.txt", Err: err}
	}
	py := env.Python
	pipInstall := []string{py, "-m", "pip", "install", "--disable-pip-version-check", "--no-cache-dir"}
	switch spec.Tool {
	case Pip:
		if spec.Version != "" {
			if err := run("install pip"+spec.Version, append(pipInstall, "pip"+spec.Version)...); err != nil {
				return err
			}
		}
		if err := run("pip install", append([]string{py, "-m", "pip", "install", "-r", req}, spec.InstallOptions()...)...); err != nil {
			return err
		}
		if spec.Check {
			if err := run("pip check", py, "-m", "pip", "check", "--disable-pip-version-check"); err != nil {
				return err
			}
		}
	case UV:
		if spec.Version != "" || runStep(ctx, dir, nil, "uv --version", py, "-m", "uv", "--version") != nil {
			if err := run("install uv"+spec.Version, append(pipInstall, "uv"+spec.Version)...); err != nil {
				return err
			}
		}
		if err := run("uv pip install", append([]string{py, "-m", "uv", "pip", "install", "-r", req}, spec.InstallOptions()...)...); err != nil {
			return err
		}
		if spec.Check {
			if err := run("uv pip check", py, "-m", "uv", "pip", "check"); err != nil {
				return err
			}
		}
	default:
		return &BuildError{Step: "choose the installer", Err: fmt.Errorf("unknown tool %q", spec.Tool)}
	}
	// Workers import ray: an install that replaced or broke it is a
	// failed set-up, as Ray's own check after the install says.
	if err := run("import ray in the env", py, "-c", "import ray"); err != nil {
		return err
	}
	ready, _ := json.Marshal(map[string]any{"spec": spec, "python": base.Executable, "built": time.Now().UTC()})
	tmp := filepath.Join(dir, ReadyFile+".tmp")
	if err := os.WriteFile(tmp, ready, 0o644); err != nil {
		return &BuildError{Step: "mark the env ready", Err: err}
	}
	if err := os.Rename(tmp, filepath.Join(dir, ReadyFile)); err != nil {
		return &BuildError{Step: "mark the env ready", Err: err}
	}
	return nil
}

// maxOutput bounds the output a BuildError keeps (its tail).
const maxOutput = 16 << 10

// runStep runs argv in dir, giving out each output line and keeping the
// tail of the output for the error.
func runStep(ctx context.Context, dir string, out func(string), step string, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = filepath.Dir(dir)
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		cmd.Dir = dir
	}
	cmd.Env = buildEnviron()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var tail []string
	size := 0
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if out != nil {
				out(line)
			}
			tail = append(tail, line)
			size += len(line) + 1
			for size > maxOutput && len(tail) > 1 {
				size -= len(tail[0]) + 1
				tail = tail[1:]
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	<-scanned
	if err == nil {
		return nil
	}
	be := &BuildError{Step: step, Output: strings.Join(tail, "\n"), Err: err, Cancelled: ctx.Err() != nil}
	if be.Cancelled {
		be.Err = fmt.Errorf("%w (%v)", err, context.Cause(ctx))
	}
	return be
}

// buildEnviron is the build commands' environment: this process's, less
// what would point them at another interpreter.
func buildEnviron() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PIP_REQUIRE_VIRTUALENV", "UV_PYTHON":
			continue
		}
		out = append(out, kv)
	}
	return append(out, "PYTHONUNBUFFERED=1", "PIP_NO_INPUT=1")
}

// lockFile takes an exclusive flock on path, polling so that ctx can end
// the wait; the returned func releases it.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, context.Cause(ctx)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
