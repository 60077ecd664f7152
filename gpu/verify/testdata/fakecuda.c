// A fake libcuda for the tests of package verify on machines without a GPU.
// It implements, on the host, the driver entry points the package binds,
// "runs" gray_hash and gray_fma in C, and checks the calling convention
// (all 11 cuLaunchKernel arguments, the JIT options, the per-thread current
// context), so that the purego bindings and Verify's flow are exercised
// for real. Built by the tests with the C compiler cgo uses.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;

enum {
	SUCCESS = 0, INVALID_VALUE = 1, NOT_FOUND = 500, INVALID_PTX = 218,
	INVALID_CONTEXT = 201, NO_DEVICE = 100, LAUNCH_FAILED = 719
};

// Knobs the tests set with fakecuda_set.
enum { K_INIT_RC, K_COUNT, K_CORRUPT_HASH, K_BAD_PTX, K_SLOW_COPY_NS, K_NAME_H100, K_NKNOBS };
static long knobs[K_NKNOBS] = {0, 1, 0, 0, 0, 0};
static long live_allocs, live_events, ctx_refs, launches;

void fakecuda_set(int k, long v) { if (k >= 0 && k < K_NKNOBS) knobs[k] = v; }
long fakecuda_live_allocs(void) { return __atomic_load_n(&live_allocs, __ATOMIC_SEQ_CST); }
long fakecuda_live_events(void) { return __atomic_load_n(&live_events, __ATOMIC_SEQ_CST); }
long fakecuda_ctx_refs(void) { return __atomic_load_n(&ctx_refs, __ATOMIC_SEQ_CST); }
long fakecuda_launches(void) { return __atomic_load_n(&launches, __ATOMIC_SEQ_CST); }

static __thread uintptr_t current_ctx;
static int ctx_token[8];

CUresult cuInit(unsigned flags) { return flags ? INVALID_VALUE : (CUresult)knobs[K_INIT_RC]; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return SUCCESS; }
CUresult cuDeviceGetCount(int *n) { *n = (int)knobs[K_COUNT]; return SUCCESS; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) {
	if (ordinal < 0 || ordinal >= knobs[K_COUNT]) return INVALID_VALUE;
	*d = ordinal;
	return SUCCESS;
}
CUresult cuDeviceGetName(char *name, int len, CUdevice d) {
	const char *n = knobs[K_NAME_H100] ? "NVIDIA H100 80GB HBM3" : "NVIDIA Fake Test GPU";
	if (len < 32) return INVALID_VALUE;
	strcpy(name, n);
	return SUCCESS;
}
CUresult cuDeviceGetUuid_v2(unsigned char *u, CUdevice d) {
	for (int i = 0; i < 16; i++) u[i] = (unsigned char)(0xa0 + i + d);
	return SUCCESS;
}
CUresult cuDeviceTotalMem_v2(size_t *b, CUdevice d) { *b = (size_t)80 << 30; return SUCCESS; }
CUresult cuDeviceGetAttribute(int *v, int attr, CUdevice d) {
	switch (attr) {
	case 75: *v = 9; break;   // cc major
	case 76: *v = 0; break;   // cc minor
	case 16: *v = 2; break;   // SMs
	case 39: *v = 256; break; // threads per SM
	case 50: *v = 0; break;   // PCI domain
	case 33: *v = 6 + d; break;
	case 34: *v = 0; break;
	default: return INVALID_VALUE;
	}
	return SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(uintptr_t *ctx, CUdevice d) {
	__atomic_add_fetch(&ctx_refs, 1, __ATOMIC_SEQ_CST);
	*ctx = (uintptr_t)&ctx_token[d & 7];
	return SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d) { __atomic_sub_fetch(&ctx_refs, 1, __ATOMIC_SEQ_CST); return SUCCESS; }
CUresult cuCtxSetCurrent(uintptr_t ctx) { current_ctx = ctx; return SUCCESS; }
CUresult cuCtxSynchronize(void) { return current_ctx ? SUCCESS : INVALID_CONTEXT; }
CUresult cuMemGetInfo_v2(size_t *free, size_t *total) {
	*free = (size_t)1 << 30;
	*total = (size_t)80 << 30;
	return SUCCESS;
}

// Modules: the image must be our PTX with the .target for cc 9.0. A module
// handle is a private copy of the image (the caller's buffer is Go memory).
CUresult cuModuleLoadDataEx(uintptr_t *mod, const void *image, unsigned n, int *opts, void **vals) {
	if (!current_ctx) return INVALID_CONTEXT;
	if (n != 2 || opts[0] != 5 || opts[1] != 6 || (uintptr_t)vals[1] < 64) return INVALID_VALUE;
	if (knobs[K_BAD_PTX] || !strstr(image, "\n.target sm_75\n") || !strstr(image, ".version 7.0")) {
		strcpy((char *)vals[0], "ptxas fatal: fake JIT rejected the module");
		return INVALID_PTX;
	}
	*mod = (uintptr_t)strdup(image);
	__atomic_add_fetch(&live_allocs, 1, __ATOMIC_SEQ_CST);
	return SUCCESS;
}
CUresult cuModuleUnload(uintptr_t mod) {
	free((void *)mod);
	__atomic_sub_fetch(&live_allocs, 1, __ATOMIC_SEQ_CST);
	return SUCCESS;
}
CUresult cuModuleGetFunction(uintptr_t *fn, uintptr_t mod, const char *name) {
	if (!mod) return INVALID_VALUE;
	// The name must be an entry of the image that was loaded.
	char want[64];
	snprintf(want, sizeof want, ".entry %s(", name);
	if (!strstr((const char *)mod, want)) return NOT_FOUND;
	if (strcmp(name, "gray_hash") == 0) *fn = 1;
	else if (strcmp(name, "gray_fma") == 0) *fn = 2;
	else return NOT_FOUND;
	return SUCCESS;
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t size) {
	if (!current_ctx) return INVALID_CONTEXT;
	void *m = malloc(size);
	if (!m) return 2;
	__atomic_add_fetch(&live_allocs, 1, __ATOMIC_SEQ_CST);
	*p = (CUdeviceptr)(uintptr_t)m;
	return SUCCESS;
}
CUresult cuMemFree_v2(CUdeviceptr p) { free((void *)(uintptr_t)p); __atomic_sub_fetch(&live_allocs, 1, __ATOMIC_SEQ_CST); return SUCCESS; }
CUresult cuMemsetD32_v2(CUdeviceptr p, unsigned v, size_t n) {
	uint32_t *w = (uint32_t *)(uintptr_t)p;
	for (size_t i = 0; i < n; i++) w[i] = v;
	return SUCCESS;
}
CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n) { memcpy((void *)(uintptr_t)dst, src, n); return SUCCESS; }
CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n) { memcpy(dst, (void *)(uintptr_t)src, n); return SUCCESS; }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, uintptr_t stream) {
	if (stream != 0) return INVALID_VALUE;
	memcpy((void *)(uintptr_t)dst, (void *)(uintptr_t)src, n);
	if (knobs[K_SLOW_COPY_NS]) {
		struct timespec ts = {0, knobs[K_SLOW_COPY_NS]};
		nanosleep(&ts, 0);
	}
	return SUCCESS;
}

static uint32_t hash(uint32_t i, uint32_t seed, uint32_t rounds) {
	uint32_t x = i * 0x9E3779B9u + seed;
	for (uint32_t r = 0; r < rounds; r++) {
		x ^= x >> 16; x *= 0x7FEB352Du; x ^= x >> 15; x *= 0x846CA68Bu; x ^= x >> 16;
		x = ((x << 7) | (x >> 25)) + (r ^ seed);
	}
	return x;
}

CUresult cuLaunchKernel(uintptr_t fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shmem, uintptr_t stream, void **params, void **extra) {
	if (!current_ctx) return INVALID_CONTEXT;
	if (gx == 0 || gy != 1 || gz != 1 || bx != 256 || by != 1 || bz != 1 || shmem != 0 || stream != 0 || extra != 0 || !params)
		return INVALID_VALUE;
	__atomic_add_fetch(&launches, 1, __ATOMIC_SEQ_CST);
	uint64_t threads = (uint64_t)gx * bx;
	if (fn == 1) {
		uint32_t *out = (uint32_t *)(uintptr_t)*(CUdeviceptr *)params[0];
		uint32_t n = *(uint32_t *)params[1], seed = *(uint32_t *)params[2], rounds = *(uint32_t *)params[3];
		for (uint64_t i = 0; i < threads && i < n; i++) out[i] = hash((uint32_t)i, seed, rounds);
		if (knobs[K_CORRUPT_HASH] && n > 777) out[777] ^= 0x10;
		return SUCCESS;
	}
	if (fn == 2) {
		float *out = (float *)(uintptr_t)*(CUdeviceptr *)params[0];
		uint32_t iters = *(uint32_t *)params[1];
		float a = *(float *)params[2], b = *(float *)params[3];
		for (uint64_t gid = 0; gid < threads; gid++) {
			float x[8];
			for (int k = 0; k < 8; k++) x[k] = (float)(gid & 255) + (float)k;
			for (uint32_t it = 0; it < iters; it++)
				for (int j = 0; j < 8; j++)
					for (int k = 0; k < 8; k++) x[k] = fmaf(x[k], a, b);
			out[gid] = ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]));
		}
		return SUCCESS;
	}
	return INVALID_VALUE;
}

typedef struct { struct timespec t; int recorded; } event;
CUresult cuEventCreate(uintptr_t *e, unsigned flags) {
	event *ev = calloc(1, sizeof *ev);
	__atomic_add_fetch(&live_events, 1, __ATOMIC_SEQ_CST);
	*e = (uintptr_t)ev;
	return SUCCESS;
}
CUresult cuEventDestroy_v2(uintptr_t e) { free((void *)e); __atomic_sub_fetch(&live_events, 1, __ATOMIC_SEQ_CST); return SUCCESS; }
CUresult cuEventRecord(uintptr_t e, uintptr_t stream) {
	event *ev = (event *)e;
	clock_gettime(CLOCK_MONOTONIC, &ev->t);
	ev->recorded = 1;
	return stream == 0 ? SUCCESS : INVALID_VALUE;
}
CUresult cuEventSynchronize(uintptr_t e) { return ((event *)e)->recorded ? SUCCESS : INVALID_VALUE; }
// Only the pre-12.8 name, so the fallback binding is what the tests use.
CUresult cuEventElapsedTime(float *ms, uintptr_t s, uintptr_t e) {
	event *a = (event *)s, *b = (event *)e;
	if (!a->recorded || !b->recorded) return INVALID_VALUE;
	*ms = (float)((b->t.tv_sec - a->t.tv_sec) * 1e3 + (b->t.tv_nsec - a->t.tv_nsec) / 1e6);
	return SUCCESS;
}

CUresult cuGetErrorName(CUresult rc, const char **s) {
	switch (rc) {
	case INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
	case NO_DEVICE: *s = "CUDA_ERROR_NO_DEVICE"; break;
	case INVALID_PTX: *s = "CUDA_ERROR_INVALID_PTX"; break;
	case INVALID_CONTEXT: *s = "CUDA_ERROR_INVALID_CONTEXT"; break;
	case NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
	default: return INVALID_VALUE;
	}
	return SUCCESS;
}
CUresult cuGetErrorString(CUresult rc, const char **s) {
	const char *n;
	if (cuGetErrorName(rc, &n) != SUCCESS) return INVALID_VALUE;
	*s = "fake driver error";
	return SUCCESS;
}
