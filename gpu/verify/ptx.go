package verify

import (
	"strconv"
	"strings"
)

// Kernel entry points in kernelPTX. The Go code looks them up by these names.
const (
	hashEntry = "gray_hash"
	fmaEntry  = "gray_fma"
)

// Hash constants, shared by the PTX (as literals) and hashRef.
const (
	hashGolden = 0x9E3779B9 // x0 = i*hashGolden + seed
	hashMul1   = 0x7FEB352D // lowbias32 multipliers (C. Wellons' hash prospector)
	hashMul2   = 0x846CA68B
)

// FMAPerIter is how many FP32 FMAs one thread of gray_fma does per loop
// iteration: 8 independent chains, each advanced 8 times.
const (
	fmaChains  = 8
	FMAPerIter = 64
)

// ptxTargetToken is replaced by the .target that suits the device (see ptxFor).
const ptxTargetToken = "@TARGET@"

// kernelPTX is hand-written PTX (ISA 7.0, so any CUDA 11.0+ driver JITs it).
// The driver compiles it for the device it is loaded on; only the .target
// line changes per device (ptxFor).
//
// gray_hash(out *u32, n, seed, rounds u32): thread i < n writes hashRef(i,
// seed, rounds) to out[i]: an integer multiply/xor/shift/rotate chain whose
// result the host recomputes and compares bit for bit.
//
// gray_fma(out *f32, iters u32, a, b f32): each thread starts 8 registers at
// x_k = (gid & 255) + k and runs iters loop iterations of 64 dependent-free
// fma.rn.f32 (x_k = x_k*a + b, 8 per chain), then stores the sum of the
// chains. With a = b = 1 every value is a small integer, so the result is
// exact: 8*(gid&255) + 28 + 64*iters (fmaRef), checked bit for bit too.
const kernelPTX = `//
// gray GPU verification kernels (hand-written PTX).
//
.version 7.0
.target ` + ptxTargetToken + `
.address_size 64

.visible .entry gray_hash(
	.param .u64 gray_hash_out,
	.param .u32 gray_hash_n,
	.param .u32 gray_hash_seed,
	.param .u32 gray_hash_rounds
)
{
	.reg .pred 	%p<3>;
	.reg .b32 	%r<16>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [gray_hash_out];
	ld.param.u32 	%r1, [gray_hash_n];
	ld.param.u32 	%r2, [gray_hash_seed];
	ld.param.u32 	%r3, [gray_hash_rounds];
	mov.u32 	%r4, %ctaid.x;
	mov.u32 	%r5, %ntid.x;
	mov.u32 	%r6, %tid.x;
	mad.lo.u32 	%r7, %r4, %r5, %r6;
	setp.ge.u32 	%p1, %r7, %r1;
	@%p1 bra 	HASH_DONE;
	mad.lo.u32 	%r8, %r7, -1640531527, %r2;
	mov.u32 	%r9, 0;
	setp.eq.u32 	%p2, %r3, 0;
	@%p2 bra 	HASH_STORE;
HASH_LOOP:
	shr.u32 	%r10, %r8, 16;
	xor.b32 	%r8, %r8, %r10;
	mul.lo.u32 	%r8, %r8, 2146121005;
	shr.u32 	%r10, %r8, 15;
	xor.b32 	%r8, %r8, %r10;
	mul.lo.u32 	%r8, %r8, -2073254261;
	shr.u32 	%r10, %r8, 16;
	xor.b32 	%r8, %r8, %r10;
	shl.b32 	%r10, %r8, 7;
	shr.u32 	%r11, %r8, 25;
	or.b32 	%r8, %r10, %r11;
	xor.b32 	%r12, %r9, %r2;
	add.u32 	%r8, %r8, %r12;
	add.u32 	%r9, %r9, 1;
	setp.lt.u32 	%p2, %r9, %r3;
	@%p2 bra 	HASH_LOOP;
HASH_STORE:
	cvta.to.global.u64 	%rd2, %rd1;
	mul.wide.u32 	%rd3, %r7, 4;
	add.s64 	%rd4, %rd2, %rd3;
	st.global.u32 	[%rd4], %r8;
HASH_DONE:
	ret;
}

.visible .entry gray_fma(
	.param .u64 gray_fma_out,
	.param .u32 gray_fma_iters,
	.param .f32 gray_fma_a,
	.param .f32 gray_fma_b
)
{
	.reg .pred 	%q<2>;
	.reg .b32 	%s<8>;
	.reg .f32 	%f<24>;
	.reg .b64 	%sd<5>;

	ld.param.u64 	%sd1, [gray_fma_out];
	ld.param.u32 	%s1, [gray_fma_iters];
	ld.param.f32 	%f20, [gray_fma_a];
	ld.param.f32 	%f21, [gray_fma_b];
	mov.u32 	%s2, %ctaid.x;
	mov.u32 	%s3, %ntid.x;
	mov.u32 	%s4, %tid.x;
	mad.lo.u32 	%s5, %s2, %s3, %s4;
	and.b32 	%s6, %s5, 255;
	cvt.rn.f32.u32 	%f0, %s6;
	add.rn.f32 	%f1, %f0, 0f3F800000;
	add.rn.f32 	%f2, %f0, 0f40000000;
	add.rn.f32 	%f3, %f0, 0f40400000;
	add.rn.f32 	%f4, %f0, 0f40800000;
	add.rn.f32 	%f5, %f0, 0f40A00000;
	add.rn.f32 	%f6, %f0, 0f40C00000;
	add.rn.f32 	%f7, %f0, 0f40E00000;
	mov.u32 	%s7, 0;
	setp.eq.u32 	%q1, %s1, 0;
	@%q1 bra 	FMA_STORE;
FMA_LOOP:
` + fmaBody + `	add.u32 	%s7, %s7, 1;
	setp.lt.u32 	%q1, %s7, %s1;
	@%q1 bra 	FMA_LOOP;
FMA_STORE:
	add.rn.f32 	%f8, %f0, %f1;
	add.rn.f32 	%f9, %f2, %f3;
	add.rn.f32 	%f10, %f4, %f5;
	add.rn.f32 	%f11, %f6, %f7;
	add.rn.f32 	%f12, %f8, %f9;
	add.rn.f32 	%f13, %f10, %f11;
	add.rn.f32 	%f14, %f12, %f13;
	cvta.to.global.u64 	%sd2, %sd1;
	mul.wide.u32 	%sd3, %s5, 4;
	add.s64 	%sd4, %sd2, %sd3;
	st.global.f32 	[%sd4], %f14;
	ret;
}
`

// fmaBody is the unrolled loop body of gray_fma: 8 rounds over the 8 chains
// %f0..%f7, so consecutive FMAs are independent and the pipeline stays full.
const fmaBody = fmaRound + fmaRound + fmaRound + fmaRound + fmaRound + fmaRound + fmaRound + fmaRound

const fmaRound = `	fma.rn.f32 	%f0, %f0, %f20, %f21;
	fma.rn.f32 	%f1, %f1, %f20, %f21;
	fma.rn.f32 	%f2, %f2, %f20, %f21;
	fma.rn.f32 	%f3, %f3, %f20, %f21;
	fma.rn.f32 	%f4, %f4, %f20, %f21;
	fma.rn.f32 	%f5, %f5, %f20, %f21;
	fma.rn.f32 	%f6, %f6, %f20, %f21;
	fma.rn.f32 	%f7, %f7, %f20, %f21;
`

// ptxFor returns kernelPTX with the .target suited to a device of compute
// capability major.minor: sm_75 from Turing on (CUDA 13 dropped the older
// targets), sm_52 for Maxwell, Pascal and Volta under older drivers. The
// kernels use nothing newer than sm_30 instructions, so both are valid.
func ptxFor(major, minor int) string {
	return strings.Replace(kernelPTX, ptxTargetToken, ptxTarget(major, minor), 1)
}

func ptxTarget(major, minor int) string {
	if major > 7 || (major == 7 && minor >= 5) {
		return "sm_75"
	}
	return "sm_52"
}

// hashRef is the host reference of gray_hash for element i.
func hashRef(i, seed, rounds uint32) uint32 {
	x := i*hashGolden + seed
	for r := uint32(0); r < rounds; r++ {
		x ^= x >> 16
		x *= hashMul1
		x ^= x >> 15
		x *= hashMul2
		x ^= x >> 16
		x = (x<<7 | x>>25) + (r ^ seed)
	}
	return x
}

// fmaRef is the exact result gray_fma stores for global thread gid with
// a = b = 1 (valid while the sum stays below 2^24, see maxFMAIters).
func fmaRef(gid, iters uint32) float32 {
	x0 := gid & 255
	perChain := iters * (FMAPerIter / fmaChains)
	return float32(fmaChains*x0 + 28 + fmaChains*perChain)
}

// maxFMAIters keeps every gray_fma value an exact integer in float32:
// 8*255 + 28 + 64*iters < 2^24.
const maxFMAIters = (1<<24 - 8*255 - 28) / FMAPerIter

// ptxLiteral renders a uint32 constant the way the PTX text spells it (a
// signed decimal): used by the tests to tie the literals to the Go constants.
func ptxLiteral(v uint32) string { return strconv.Itoa(int(int32(v))) }
