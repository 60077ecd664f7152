package verify

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Sentinel errors. Every error this package returns wraps one of them.
var (
	// ErrNoDriver: libcuda is not installed (the normal case without a GPU),
	// or only the toolkit's stub library was found. The node has no GPUs.
	ErrNoDriver = errors.New("no CUDA driver")
	// ErrNoDevice: the driver loaded but reports no CUDA device.
	ErrNoDevice = errors.New("no CUDA device")
	// ErrDriverTooOld: the library lacks an entry point this package needs.
	ErrDriverTooOld = errors.New("CUDA driver too old")
	// ErrCUDA: a driver call returned an error (see *CUDAError).
	ErrCUDA = errors.New("cuda")
	// ErrKernel: a kernel ran but its output is wrong.
	ErrKernel = errors.New("kernel result mismatch")
	// ErrMismatch: the measured numbers do not fit the claimed model.
	ErrMismatch = errors.New("gpu does not match its claimed model")
)

// libNames are tried in order. libcuda.so.1 is what the driver installs;
// plain libcuda.so may be a dev symlink to it, or the toolkit's stub.
var libNames = []string{"libcuda.so.1", "libcuda.so"}

// CUresult codes this package interprets itself.
const (
	cudaSuccess              = 0
	cudaErrorStubLibrary     = 34
	cudaErrorInsufficientDrv = 35
	cudaErrorNoDevice        = 100
)

// Device attributes (CUdevice_attribute).
const (
	attrMultiprocessorCount    = 16
	attrPCIBusID               = 33
	attrPCIDeviceID            = 34
	attrMaxThreadsPerSM        = 39
	attrPCIDomainID            = 50
	attrComputeCapabilityMajor = 75
	attrComputeCapabilityMinor = 76
)

// JIT options (CUjit_option) for cuModuleLoadDataEx.
const (
	jitErrorLogBuffer     = 5
	jitErrorLogBufferSize = 6
)

// CUDAError is a failed driver call.
type CUDAError struct {
	Call    string // the entry point, e.g. "cuLaunchKernel"
	Code    int    // the CUresult
	Name    string // e.g. "CUDA_ERROR_OUT_OF_MEMORY"
	Message string // cuGetErrorString's text
	Log     string // the JIT error log, for cuModuleLoadDataEx
}

func (e *CUDAError) Error() string {
	s := fmt.Sprintf("cuda: %s: %s (%d)", e.Call, e.Name, e.Code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Log != "" {
		s += ": " + e.Log
	}
	return s
}

// Unwrap makes errors.Is(err, ErrCUDA) true.
func (e *CUDAError) Unwrap() error { return ErrCUDA }

// Driver is libcuda loaded with purego: no cgo, no CUDA headers at build
// time. Its methods may be called from several goroutines; each verification
// locks its goroutine to an OS thread for the context it makes current.
type Driver struct {
	Path    string // the library that was loaded
	Version int    // cuDriverGetVersion, e.g. 13000 for CUDA 13.0

	lib uintptr

	cuInit                    func(flags uint32) int32
	cuDriverGetVersion        func(v *int32) int32
	cuDeviceGetCount          func(n *int32) int32
	cuDeviceGet               func(dev *int32, ordinal int32) int32
	cuDeviceGetName           func(name *byte, size int32, dev int32) int32
	cuDeviceGetUuid           func(uuid *[16]byte, dev int32) int32
	cuDeviceTotalMem          func(bytes *uintptr, dev int32) int32
	cuDeviceGetAttribute      func(v *int32, attr int32, dev int32) int32
	cuDevicePrimaryCtxRetain  func(ctx *uintptr, dev int32) int32
	cuDevicePrimaryCtxRelease func(dev int32) int32
	cuCtxSetCurrent           func(ctx uintptr) int32
	cuCtxSynchronize          func() int32
	cuMemGetInfo              func(free, total *uintptr) int32
	cuModuleLoadDataEx        func(mod *uintptr, image *byte, n uint32, opts *int32, vals *uintptr) int32
	cuModuleUnload            func(mod uintptr) int32
	cuModuleGetFunction       func(fn *uintptr, mod uintptr, name string) int32
	cuMemAlloc                func(dptr *uint64, size uintptr) int32
	cuMemFree                 func(dptr uint64) int32
	cuMemsetD32               func(dptr uint64, v uint32, n uintptr) int32
	cuMemcpyHtoD              func(dst uint64, src unsafe.Pointer, size uintptr) int32
	cuMemcpyDtoH              func(dst unsafe.Pointer, src uint64, size uintptr) int32
	cuMemcpyDtoDAsync         func(dst, src uint64, size uintptr, stream uintptr) int32
	cuLaunchKernel            func(fn uintptr, gx, gy, gz, bx, by, bz, shmem uint32, stream uintptr, params *unsafe.Pointer, extra *unsafe.Pointer) int32
	cuEventCreate             func(ev *uintptr, flags uint32) int32
	cuEventDestroy            func(ev uintptr) int32
	cuEventRecord             func(ev uintptr, stream uintptr) int32
	cuEventSynchronize        func(ev uintptr) int32
	cuEventElapsedTime        func(ms *float32, start, end uintptr) int32
	cuGetErrorName            func(code int32, s **byte) int32
	cuGetErrorString          func(code int32, s **byte) int32
}

var (
	openOnce sync.Once
	openDrv  *Driver
	openErr  error
)

// Open loads libcuda once per process and initialises it. Without a driver
// it returns an error wrapping ErrNoDriver; with a driver but no device, one
// wrapping ErrNoDevice. It never panics.
func Open() (*Driver, error) {
	openOnce.Do(func() { openDrv, openErr = open(libNames) })
	return openDrv, openErr
}

func open(names []string) (d *Driver, err error) {
	defer func() {
		if r := recover(); r != nil { // purego panics on a malformed binding
			d, err = nil, fmt.Errorf("%w: loading libcuda: %v", ErrNoDriver, r)
		}
	}()
	var lib uintptr
	var path string
	var errs []string
	for _, name := range names {
		h, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			lib, path = h, name
			break
		}
		errs = append(errs, err.Error())
	}
	if lib == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoDriver, strings.Join(errs, "; "))
	}
	d = &Driver{lib: lib, Path: path}
	if err := d.bind(); err != nil {
		return nil, err
	}
	if rc := d.cuInit(0); rc != cudaSuccess {
		cerr := d.err("cuInit", rc)
		switch rc {
		case cudaErrorStubLibrary, cudaErrorInsufficientDrv:
			return nil, fmt.Errorf("%w: %w", ErrNoDriver, cerr)
		case cudaErrorNoDevice:
			return nil, fmt.Errorf("%w: %w", ErrNoDevice, cerr)
		}
		return nil, cerr
	}
	var v int32
	if rc := d.cuDriverGetVersion(&v); rc == cudaSuccess {
		d.Version = int(v)
	}
	return d, nil
}

// binding names one entry point: the first symbol of names that the
// library exports is bound to fn.
type binding struct {
	fn       any
	names    []string
	optional bool
}

func (d *Driver) bind() error {
	for _, b := range []binding{
		{&d.cuInit, []string{"cuInit"}, false},
		{&d.cuDriverGetVersion, []string{"cuDriverGetVersion"}, false},
		{&d.cuDeviceGetCount, []string{"cuDeviceGetCount"}, false},
		{&d.cuDeviceGet, []string{"cuDeviceGet"}, false},
		{&d.cuDeviceGetName, []string{"cuDeviceGetName"}, false},
		{&d.cuDeviceGetUuid, []string{"cuDeviceGetUuid_v2", "cuDeviceGetUuid"}, true},
		{&d.cuDeviceTotalMem, []string{"cuDeviceTotalMem_v2"}, false},
		{&d.cuDeviceGetAttribute, []string{"cuDeviceGetAttribute"}, false},
		// The primary context avoids cuCtxCreate, whose signature changed in
		// CUDA 13 (cuCtxCreate is cuCtxCreate_v4 there, with a params struct).
		{&d.cuDevicePrimaryCtxRetain, []string{"cuDevicePrimaryCtxRetain"}, false},
		{&d.cuDevicePrimaryCtxRelease, []string{"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"}, false},
		{&d.cuCtxSetCurrent, []string{"cuCtxSetCurrent"}, false},
		{&d.cuCtxSynchronize, []string{"cuCtxSynchronize"}, false},
		{&d.cuMemGetInfo, []string{"cuMemGetInfo_v2"}, false},
		{&d.cuModuleLoadDataEx, []string{"cuModuleLoadDataEx"}, false},
		{&d.cuModuleUnload, []string{"cuModuleUnload"}, false},
		{&d.cuModuleGetFunction, []string{"cuModuleGetFunction"}, false},
		{&d.cuMemAlloc, []string{"cuMemAlloc_v2"}, false},
		{&d.cuMemFree, []string{"cuMemFree_v2"}, false},
		{&d.cuMemsetD32, []string{"cuMemsetD32_v2"}, false},
		{&d.cuMemcpyHtoD, []string{"cuMemcpyHtoD_v2"}, false},
		{&d.cuMemcpyDtoH, []string{"cuMemcpyDtoH_v2"}, false},
		{&d.cuMemcpyDtoDAsync, []string{"cuMemcpyDtoDAsync_v2"}, false},
		{&d.cuLaunchKernel, []string{"cuLaunchKernel"}, false},
		{&d.cuEventCreate, []string{"cuEventCreate"}, false},
		{&d.cuEventDestroy, []string{"cuEventDestroy_v2", "cuEventDestroy"}, false},
		{&d.cuEventRecord, []string{"cuEventRecord"}, false},
		{&d.cuEventSynchronize, []string{"cuEventSynchronize"}, false},
		// CUDA 12.8 added cuEventElapsedTime_v2 (same signature; cuda.h maps
		// the name to it from 13.0); older drivers have only the first one.
		{&d.cuEventElapsedTime, []string{"cuEventElapsedTime_v2", "cuEventElapsedTime"}, false},
		{&d.cuGetErrorName, []string{"cuGetErrorName"}, true},
		{&d.cuGetErrorString, []string{"cuGetErrorString"}, true},
	} {
		bound := false
		for _, name := range b.names {
			sym, err := purego.Dlsym(d.lib, name)
			if err != nil || sym == 0 {
				continue
			}
			purego.RegisterFunc(b.fn, sym)
			bound = true
			break
		}
		if !bound && !b.optional {
			return fmt.Errorf("%w: %s exports none of %v", ErrDriverTooOld, d.Path, b.names)
		}
	}
	return nil
}

// err turns a CUresult into a *CUDAError, or nil for CUDA_SUCCESS.
func (d *Driver) err(call string, rc int32) error {
	if rc == cudaSuccess {
		return nil
	}
	e := &CUDAError{Call: call, Code: int(rc), Name: fmt.Sprintf("CUresult(%d)", rc)}
	var p *byte
	if d.cuGetErrorName != nil && d.cuGetErrorName(rc, &p) == cudaSuccess && p != nil {
		e.Name = goString(p)
	}
	p = nil
	if d.cuGetErrorString != nil && d.cuGetErrorString(rc, &p) == cudaSuccess && p != nil {
		e.Message = goString(p)
	}
	return e
}

// goString copies a NUL-terminated C string owned by the driver.
func goString(p *byte) string {
	var b []byte
	for i := 0; i < 4096; i++ {
		c := *(*byte)(unsafe.Add(unsafe.Pointer(p), i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}

// cString trims a fixed buffer at its first NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// Count is the number of CUDA devices the driver shows this process (after
// CUDA_VISIBLE_DEVICES).
func (d *Driver) Count() (int, error) {
	var n int32
	if err := d.err("cuDeviceGetCount", d.cuDeviceGetCount(&n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

// Info is what the driver says about one device, before any kernel runs.
type Info struct {
	Index       int
	Name        string
	UUID        string // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as NVML prints it
	PCIBusID    string // "00000000:00:06.0", as NVML prints it
	CCMajor     int
	CCMinor     int
	SMs         int
	MaxThreads  int // resident threads per SM
	MemoryBytes uint64
}

// Info reads a device's identity and the attributes the kernels are sized by.
func (d *Driver) Info(index int) (Info, error) {
	in := Info{Index: index}
	var dev int32
	if err := d.err("cuDeviceGet", d.cuDeviceGet(&dev, int32(index))); err != nil {
		return in, err
	}
	name := make([]byte, 256)
	if err := d.err("cuDeviceGetName", d.cuDeviceGetName(&name[0], int32(len(name)), dev)); err != nil {
		return in, err
	}
	in.Name = cString(name)
	if d.cuDeviceGetUuid != nil {
		var u [16]byte
		if d.cuDeviceGetUuid(&u, dev) == cudaSuccess {
			in.UUID = fmt.Sprintf("GPU-%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
		}
	}
	var mem uintptr
	if err := d.err("cuDeviceTotalMem_v2", d.cuDeviceTotalMem(&mem, dev)); err != nil {
		return in, err
	}
	in.MemoryBytes = uint64(mem)
	attrs := []struct {
		attr int32
		dst  *int
	}{
		{attrComputeCapabilityMajor, &in.CCMajor},
		{attrComputeCapabilityMinor, &in.CCMinor},
		{attrMultiprocessorCount, &in.SMs},
		{attrMaxThreadsPerSM, &in.MaxThreads},
	}
	for _, a := range attrs {
		var v int32
		if err := d.err("cuDeviceGetAttribute", d.cuDeviceGetAttribute(&v, a.attr, dev)); err != nil {
			return in, err
		}
		*a.dst = int(v)
	}
	var dom, bus, slot int32
	if d.cuDeviceGetAttribute(&dom, attrPCIDomainID, dev) == cudaSuccess &&
		d.cuDeviceGetAttribute(&bus, attrPCIBusID, dev) == cudaSuccess &&
		d.cuDeviceGetAttribute(&slot, attrPCIDeviceID, dev) == cudaSuccess {
		in.PCIBusID = fmt.Sprintf("%08X:%02X:%02X.0", dom, bus, slot)
	}
	return in, nil
}

// session is one device's primary context made current on a locked OS
// thread, with the resources to free when it ends.
type session struct {
	d    *Driver
	dev  int32
	ctx  uintptr
	mod  uintptr
	bufs []uint64
	evs  []uintptr
}

// openSession retains the device's primary context and makes it current.
// The caller must have locked its goroutine to the OS thread.
func (d *Driver) openSession(index int) (*session, error) {
	s := &session{d: d}
	if err := d.err("cuDeviceGet", d.cuDeviceGet(&s.dev, int32(index))); err != nil {
		return nil, err
	}
	if err := d.err("cuDevicePrimaryCtxRetain", d.cuDevicePrimaryCtxRetain(&s.ctx, s.dev)); err != nil {
		return nil, err
	}
	if err := d.err("cuCtxSetCurrent", d.cuCtxSetCurrent(s.ctx)); err != nil {
		d.cuDevicePrimaryCtxRelease(s.dev)
		return nil, err
	}
	return s, nil
}

// close frees everything and releases the primary context; with no other
// user in the process the driver then destroys it and its memory.
func (s *session) close() {
	d := s.d
	for _, e := range s.evs {
		d.cuEventDestroy(e)
	}
	for _, b := range s.bufs {
		d.cuMemFree(b)
	}
	if s.mod != 0 {
		d.cuModuleUnload(s.mod)
	}
	d.cuCtxSetCurrent(0)
	d.cuDevicePrimaryCtxRelease(s.dev)
}

// loadModule JIT-compiles PTX text, returning the JIT's error log on failure.
func (s *session) loadModule(ptx string) error {
	image := []byte(ptx + "\x00")
	logBuf := make([]byte, 8192)
	opts := []int32{jitErrorLogBuffer, jitErrorLogBufferSize}
	vals := []uintptr{uintptr(unsafe.Pointer(&logBuf[0])), uintptr(len(logBuf) - 1)}
	var pin runtime.Pinner
	pin.Pin(&image[0])
	pin.Pin(&logBuf[0])
	rc := s.d.cuModuleLoadDataEx(&s.mod, &image[0], uint32(len(opts)), &opts[0], &vals[0])
	pin.Unpin()
	runtime.KeepAlive(logBuf)
	if err := s.d.err("cuModuleLoadDataEx", rc); err != nil {
		s.mod = 0
		var ce *CUDAError
		if errors.As(err, &ce) {
			ce.Log = cString(logBuf)
		}
		return err
	}
	return nil
}

func (s *session) function(name string) (uintptr, error) {
	var fn uintptr
	return fn, s.d.err("cuModuleGetFunction("+name+")", s.d.cuModuleGetFunction(&fn, s.mod, name))
}

func (s *session) alloc(size uint64) (uint64, error) {
	var p uint64
	if err := s.d.err("cuMemAlloc_v2", s.d.cuMemAlloc(&p, uintptr(size))); err != nil {
		return 0, err
	}
	s.bufs = append(s.bufs, p)
	return p, nil
}

func (s *session) event() (uintptr, error) {
	var e uintptr
	if err := s.d.err("cuEventCreate", s.d.cuEventCreate(&e, 0)); err != nil {
		return 0, err
	}
	s.evs = append(s.evs, e)
	return e, nil
}

// launch runs fn on a 1-D grid on the default stream. args are pointers to
// the parameter values in the kernel's order; they are pinned for the call.
func (s *session) launch(fn uintptr, grid, block uint32, args ...any) error {
	params := make([]unsafe.Pointer, len(args))
	var pin runtime.Pinner
	defer pin.Unpin()
	for i, a := range args {
		var p unsafe.Pointer
		switch v := a.(type) {
		case *uint64:
			p = unsafe.Pointer(v)
		case *uint32:
			p = unsafe.Pointer(v)
		case *float32:
			p = unsafe.Pointer(v)
		default:
			return fmt.Errorf("%w: unsupported kernel argument %T", ErrCUDA, a)
		}
		pin.Pin(p)
		params[i] = p
	}
	pin.Pin(&params[0])
	rc := s.d.cuLaunchKernel(fn, grid, 1, 1, block, 1, 1, 0, 0, &params[0], nil)
	return s.d.err("cuLaunchKernel", rc)
}

func (s *session) sync() error { return s.d.err("cuCtxSynchronize", s.d.cuCtxSynchronize()) }

// readU32 copies n 32-bit words from device memory at src.
func (s *session) readU32(src uint64, n int) ([]uint32, error) {
	out := make([]uint32, n)
	if n == 0 {
		return out, nil
	}
	var pin runtime.Pinner
	pin.Pin(&out[0])
	defer pin.Unpin()
	rc := s.d.cuMemcpyDtoH(unsafe.Pointer(&out[0]), src, uintptr(4*n))
	return out, s.d.err("cuMemcpyDtoH_v2", rc)
}

// elapsed is the time between two recorded events, after waiting for end.
func (s *session) elapsed(start, end uintptr) (float64, error) {
	if err := s.d.err("cuEventSynchronize", s.d.cuEventSynchronize(end)); err != nil {
		return 0, err
	}
	var ms float32
	if err := s.d.err("cuEventElapsedTime", s.d.cuEventElapsedTime(&ms, start, end)); err != nil {
		return 0, err
	}
	return float64(ms) / 1e3, nil
}

func (s *session) record(ev uintptr) error {
	return s.d.err("cuEventRecord", s.d.cuEventRecord(ev, 0))
}
