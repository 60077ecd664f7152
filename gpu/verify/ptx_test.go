package verify

import (
	"math/bits"
	"regexp"
	"strings"
	"testing"
)

func TestPTXHasTheEntriesAndHeader(t *testing.T) {
	for _, want := range []string{
		".version 7.0\n", ".address_size 64\n",
		".visible .entry " + hashEntry + "(", ".visible .entry " + fmaEntry + "(",
	} {
		if !strings.Contains(kernelPTX, want) {
			t.Errorf("kernelPTX lacks %q", want)
		}
	}
	if n := strings.Count(kernelPTX, ".entry "); n != 2 {
		t.Errorf("%d entries, want 2", n)
	}
	if strings.Count(kernelPTX, "{") != strings.Count(kernelPTX, "}") {
		t.Error("unbalanced braces")
	}
	if strings.Count(kernelPTX, ptxTargetToken) != 1 {
		t.Error("the target placeholder must appear once")
	}
}

func TestPTXTargetFollowsComputeCapability(t *testing.T) {
	for _, c := range []struct {
		major, minor int
		want         string
	}{{5, 2, "sm_52"}, {6, 1, "sm_52"}, {7, 0, "sm_52"}, {7, 5, "sm_75"}, {8, 0, "sm_75"}, {9, 0, "sm_75"}, {10, 0, "sm_75"}, {12, 0, "sm_75"}} {
		src := ptxFor(c.major, c.minor)
		if !strings.Contains(src, "\n.target "+c.want+"\n") || strings.Contains(src, ptxTargetToken) {
			t.Errorf("cc %d.%d: want .target %s", c.major, c.minor, c.want)
		}
	}
}

func TestPTXLiteralsAreTheGoConstants(t *testing.T) {
	for name, v := range map[string]uint32{"golden": hashGolden, "mul1": hashMul1, "mul2": hashMul2} {
		if !strings.Contains(kernelPTX, ", "+ptxLiteral(v)+",") && !strings.Contains(kernelPTX, ", "+ptxLiteral(v)+";") {
			t.Errorf("%s (%#x = %s) not in the PTX", name, v, ptxLiteral(v))
		}
	}
}

func TestPTXLabelsAndRegistersAreDeclared(t *testing.T) {
	// Every branch target is defined in the same kernel, and every
	// register used is inside the range its .reg line declares.
	for _, entry := range []string{hashEntry, fmaEntry} {
		body := kernelPTX[strings.Index(kernelPTX, ".entry "+entry):]
		body = body[:strings.Index(body, "\n}")]
		decl := map[string]int{}
		for _, m := range regexp.MustCompile(`\.reg \.\w+\s+%(\w+?)<(\d+)>`).FindAllStringSubmatch(body, -1) {
			decl[m[1]] = atoi(m[2])
		}
		for _, m := range regexp.MustCompile(`%([a-z]+)(\d+)\b`).FindAllStringSubmatch(body, -1) {
			n, ok := decl[m[1]]
			if !ok || atoi(m[2]) >= n {
				t.Errorf("%s: register %%%s%s not declared (have %v)", entry, m[1], m[2], decl)
			}
		}
		for _, m := range regexp.MustCompile(`bra\s+(\w+);`).FindAllStringSubmatch(body, -1) {
			if !strings.Contains(body, "\n"+m[1]+":") {
				t.Errorf("%s: branch to undefined label %s", entry, m[1])
			}
		}
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// hashSpec is the hash written out independently of hashRef (64-bit
// arithmetic masked to 32 bits, math/bits for the rotate).
func hashSpec(i, seed, rounds uint32) uint32 {
	const mask = 1<<32 - 1
	x := (uint64(i)*0x9E3779B9 + uint64(seed)) & mask
	for r := uint64(0); r < uint64(rounds); r++ {
		x ^= x >> 16
		x = (x * 0x7FEB352D) & mask
		x ^= x >> 15
		x = (x * 0x846CA68B) & mask
		x ^= x >> 16
		x = (uint64(bits.RotateLeft32(uint32(x), 7)) + (r ^ uint64(seed))) & mask
	}
	return uint32(x)
}

func TestHashRef(t *testing.T) {
	// Golden values: a change to the hash must be a deliberate one.
	for _, c := range []struct{ i, seed, rounds, want uint32 }{
		{0, 0x0, 0, 0x00000000},
		{1, 0x0, 16, 0x6a72e16b},
		{12345, 0xdeadbeef, 16, 0x2e918b4f},
		{1048575, 0x7, 16, 0x62e39a80},
		{4294967295, 0xffffffff, 3, 0xbbc5e0d0},
	} {
		if got := hashRef(c.i, c.seed, c.rounds); got != c.want {
			t.Errorf("hashRef(%d, %#x, %d) = %#08x, want %#08x", c.i, c.seed, c.rounds, got, c.want)
		}
	}
	// The independent spelling agrees everywhere we look.
	for _, seed := range []uint32{1, 0x9e3779b9, 0xffffffff} {
		for i := uint32(0); i < 20000; i += 7 {
			if a, b := hashRef(i, seed, DefaultHashRounds), hashSpec(i, seed, DefaultHashRounds); a != b {
				t.Fatalf("i=%d seed=%#x: hashRef %#x, spec %#x", i, seed, a, b)
			}
		}
	}
	// It mixes: neighbours share about half their bits, seeds change outputs.
	diff := 0
	const n = 4096
	for i := uint32(0); i < n; i++ {
		diff += bits.OnesCount32(hashRef(i, 1, DefaultHashRounds) ^ hashRef(i+1, 1, DefaultHashRounds))
		if hashRef(i, 1, DefaultHashRounds) == hashRef(i, 2, DefaultHashRounds) {
			t.Fatalf("seed does not change element %d", i)
		}
	}
	if avg := float64(diff) / n; avg < 14 || avg > 18 {
		t.Errorf("neighbouring outputs differ in %.1f bits on average, want about 16", avg)
	}
}

func TestCompareHashFindsAWrongWord(t *testing.T) {
	got := make([]uint32, 5000)
	for k := range got {
		got[k] = hashRef(100+uint32(k), 9, 2)
	}
	if err := compareHash(got, 100, 9, 2); err != nil {
		t.Fatal(err)
	}
	got[4321] ^= 1 << 17
	if err := compareHash(got, 100, 9, 2); err == nil || !strings.Contains(err.Error(), "first at 4421") {
		t.Fatalf("want a mismatch at 4421, got %v", err)
	}
}

func TestFMARefStaysExact(t *testing.T) {
	// The largest allowed iters keeps the biggest sum below 2^24.
	if v := fmaRef(255, maxFMAIters); float64(v) >= 1<<24 {
		t.Fatalf("fmaRef(255, max) = %v, not exact", v)
	}
	if got, want := fmaRef(3, 10), float32(8*3+28+64*10); got != want {
		t.Fatalf("fmaRef = %v, want %v", got, want)
	}
	if (Options{FMAIters: 1 << 30}).withDefaults().FMAIters != maxFMAIters {
		t.Fatal("FMAIters is not capped")
	}
}

// BenchmarkHostHashCheck is the host's share of a default verification:
// recomputing DefaultHashN hashes of DefaultHashRounds rounds.
func BenchmarkHostHashCheck(b *testing.B) {
	got := make([]uint32, DefaultHashN)
	for k := range got {
		got[k] = hashRef(uint32(k), 3, DefaultHashRounds)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := compareHash(got, 0, 3, DefaultHashRounds); err != nil {
			b.Fatal(err)
		}
	}
}
