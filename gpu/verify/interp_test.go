package verify

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
)

// A small interpreter for the PTX subset kernelPTX uses, so that CI (no
// GPU) checks that the kernels compute what hashRef and fmaRef say. Any
// instruction it does not know fails the test, so it cannot silently skip
// part of a kernel.

type ptxFunc struct {
	params []string
	body   []string // instructions and "LABEL:" lines
	labels map[string]int
}

func parseEntry(t *testing.T, src, name string) ptxFunc {
	t.Helper()
	head := ".visible .entry " + name + "("
	i := strings.Index(src, head)
	if i < 0 {
		t.Fatalf("no entry %s", name)
	}
	rest := src[i+len(head):]
	closeParen := strings.Index(rest, ")")
	var f ptxFunc
	for _, p := range strings.Split(rest[:closeParen], ",") {
		fields := strings.Fields(p)
		f.params = append(f.params, fields[len(fields)-1])
	}
	open := strings.Index(rest, "{")
	end := strings.Index(rest, "\n}")
	f.labels = map[string]int{}
	for _, line := range strings.Split(rest[open+1:end], "\n") {
		if k := strings.Index(line, "//"); k >= 0 {
			line = line[:k]
		}
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, ".reg") {
			continue
		}
		if strings.HasSuffix(line, ":") {
			f.labels[strings.TrimSuffix(line, ":")] = len(f.body)
			continue
		}
		if !strings.HasSuffix(line, ";") {
			t.Fatalf("%s: line without ';': %q", name, line)
		}
		f.body = append(f.body, strings.TrimSuffix(line, ";"))
	}
	return f
}

type thread struct {
	t       *testing.T
	f       ptxFunc
	params  map[string]uint64
	regs    map[string]uint64
	special map[string]uint64
	mem     map[uint64]uint32
	steps   int
}

func (th *thread) val(op string) uint64 {
	op = strings.TrimSpace(op)
	switch {
	case strings.HasPrefix(op, "%"):
		if v, ok := th.special[op]; ok {
			return v
		}
		v, ok := th.regs[op]
		if !ok {
			th.t.Fatalf("read of unset register %s", op)
		}
		return v
	case strings.HasPrefix(op, "0f"):
		v, err := strconv.ParseUint(op[2:], 16, 32)
		if err != nil {
			th.t.Fatalf("float literal %q: %v", op, err)
		}
		return v
	default:
		v, err := strconv.ParseInt(op, 0, 64)
		if err != nil {
			th.t.Fatalf("operand %q: %v", op, err)
		}
		return uint64(v)
	}
}

func f32(v uint64) float32     { return math.Float32frombits(uint32(v)) }
func f32bits(f float32) uint64 { return uint64(math.Float32bits(f)) }

func (th *thread) run() {
	for pc := 0; pc < len(th.f.body); {
		th.steps++
		if th.steps > 1_000_000 {
			th.t.Fatal("runaway kernel")
		}
		ins := th.f.body[pc]
		pc++
		if strings.HasPrefix(ins, "@") {
			sp := strings.IndexAny(ins, " \t")
			pred, neg := ins[1:sp], false
			if strings.HasPrefix(pred, "!") {
				pred, neg = pred[1:], true
			}
			if (th.val(pred) != 0) == neg {
				continue
			}
			ins = strings.TrimSpace(ins[sp:])
		}
		fields := strings.Fields(ins)
		opc := fields[0]
		var ops []string
		if len(fields) > 1 {
			for _, o := range strings.Split(strings.Join(fields[1:], " "), ",") {
				ops = append(ops, strings.TrimSpace(o))
			}
		}
		u32 := func(i int) uint32 { return uint32(th.val(ops[i])) }
		set := func(v uint64) { th.regs[ops[0]] = v }
		switch opc {
		case "ret":
			return
		case "bra":
			target, ok := th.f.labels[ops[0]]
			if !ok {
				th.t.Fatalf("bra to unknown label %s", ops[0])
			}
			pc = target
		case "ld.param.u64", "ld.param.u32", "ld.param.f32":
			name := strings.Trim(ops[1], "[]")
			v, ok := th.params[name]
			if !ok {
				th.t.Fatalf("unknown param %s", name)
			}
			set(v)
		case "mov.u32":
			set(uint64(u32(1)))
		case "mad.lo.u32":
			set(uint64(u32(1)*u32(2) + u32(3)))
		case "mul.lo.u32":
			set(uint64(u32(1) * u32(2)))
		case "add.u32":
			set(uint64(u32(1) + u32(2)))
		case "xor.b32":
			set(uint64(u32(1) ^ u32(2)))
		case "or.b32":
			set(uint64(u32(1) | u32(2)))
		case "and.b32":
			set(uint64(u32(1) & u32(2)))
		case "shl.b32":
			set(uint64(u32(1) << u32(2)))
		case "shr.u32":
			set(uint64(u32(1) >> u32(2)))
		case "setp.ge.u32", "setp.eq.u32", "setp.lt.u32":
			a, b := u32(1), u32(2)
			r := map[string]bool{"setp.ge.u32": a >= b, "setp.eq.u32": a == b, "setp.lt.u32": a < b}[opc]
			if r {
				set(1)
			} else {
				set(0)
			}
		case "cvta.to.global.u64":
			set(th.val(ops[1]))
		case "mul.wide.u32":
			set(uint64(u32(1)) * uint64(u32(2)))
		case "add.s64":
			set(th.val(ops[1]) + th.val(ops[2]))
		case "cvt.rn.f32.u32":
			set(f32bits(float32(u32(1))))
		case "add.rn.f32":
			set(f32bits(f32(th.val(ops[1])) + f32(th.val(ops[2]))))
		case "fma.rn.f32":
			// Exact for the integer-valued operands the tests use.
			r := math.FMA(float64(f32(th.val(ops[1]))), float64(f32(th.val(ops[2]))), float64(f32(th.val(ops[3]))))
			set(f32bits(float32(r)))
		case "st.global.u32", "st.global.f32":
			th.mem[th.val(strings.Trim(ops[0], "[]"))] = u32(1)
		default:
			th.t.Fatalf("interpreter does not know %q", opc)
		}
	}
	th.t.Fatal("fell off the end of the kernel without ret")
}

// launch runs every thread of a 1-D grid and returns the memory it stored.
func launch(t *testing.T, f ptxFunc, grid, block uint32, args ...uint64) map[uint64]uint32 {
	t.Helper()
	if len(args) != len(f.params) {
		t.Fatalf("kernel takes %d params, got %d", len(f.params), len(args))
	}
	mem := map[uint64]uint32{}
	for b := uint32(0); b < grid; b++ {
		for x := uint32(0); x < block; x++ {
			th := &thread{t: t, f: f, regs: map[string]uint64{}, mem: mem, params: map[string]uint64{},
				special: map[string]uint64{"%ctaid.x": uint64(b), "%ntid.x": uint64(block), "%tid.x": uint64(x)}}
			for i, p := range f.params {
				th.params[p] = args[i]
			}
			th.run()
		}
	}
	return mem
}

const outBase = 0x7f0000000000

func TestInterpretedHashKernelMatchesHashRef(t *testing.T) {
	for _, target := range [][2]int{{9, 0}, {6, 1}} {
		f := parseEntry(t, ptxFor(target[0], target[1]), hashEntry)
		for _, tc := range []struct{ n, seed, rounds uint32 }{
			{1000, 1, 16}, {300, 0xdeadbeef, 1}, {257, 42, 0}, {64, 0xffffffff, 3},
		} {
			grid := (tc.n + blockSize - 1) / blockSize
			mem := launch(t, f, grid, blockSize, outBase, uint64(tc.n), uint64(tc.seed), uint64(tc.rounds))
			if len(mem) != int(tc.n) {
				t.Fatalf("%+v: %d words written, want %d (threads >= n must not store)", tc, len(mem), tc.n)
			}
			for i := uint32(0); i < tc.n; i++ {
				got, ok := mem[outBase+4*uint64(i)]
				if want := hashRef(i, tc.seed, tc.rounds); !ok || got != want {
					t.Fatalf("%+v: out[%d] = %#x (written %v), want %#x", tc, i, got, ok, want)
				}
			}
		}
	}
}

func TestInterpretedFMAKernelMatchesFMARef(t *testing.T) {
	f := parseEntry(t, ptxFor(9, 0), fmaEntry)
	one := uint64(math.Float32bits(1))
	for _, iters := range []uint32{0, 1, 5} {
		const grid, block = 2, 160 // 320 threads: gid & 255 wraps
		mem := launch(t, f, grid, block, outBase, uint64(iters), one, one)
		if len(mem) != grid*block {
			t.Fatalf("iters %d: %d words written, want %d", iters, len(mem), grid*block)
		}
		for gid := uint32(0); gid < grid*block; gid++ {
			got := math.Float32frombits(mem[outBase+4*uint64(gid)])
			if want := fmaRef(gid, iters); got != want {
				t.Fatalf("iters %d: thread %d = %v, want %v", iters, gid, got, want)
			}
		}
	}
}

func TestInterpreterCountsFMAsPerIteration(t *testing.T) {
	// One loop iteration of gray_fma must hold exactly FMAPerIter FMAs.
	f := parseEntry(t, kernelPTX, fmaEntry)
	loop, end := f.labels["FMA_LOOP"], f.labels["FMA_STORE"]
	n := 0
	for _, ins := range f.body[loop:end] {
		if strings.HasPrefix(ins, "fma.rn.f32") {
			n++
		}
	}
	if n != FMAPerIter {
		t.Fatalf("%d FMAs per iteration, FMAPerIter = %d", n, FMAPerIter)
	}
	if got := fmt.Sprint(len(f.params)); got != "4" {
		t.Fatalf("gray_fma params = %v", f.params)
	}
}
