package pickle

import (
	"bytes"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"testing"
)

func TestDecodeOptions(t *testing.T) {
	v, err := Decode(bytes.NewReader(readFixture(t, "options.pkl")))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"num_returns": int64(2),
		"num_cpus":    1.5,
		"scheduling_strategy": &Object{
			Module: "ray.util.scheduling_strategies",
			Name:   "NodeAffinitySchedulingStrategy",
			State: map[string]any{
				"node_id":               strings.Repeat("ab", 28),
				"soft":                  true,
				"_spill_on_unavailable": false,
				"_fail_on_unavailable":  false,
			},
			Dict: map[string]any{
				"node_id":               strings.Repeat("ab", 28),
				"soft":                  true,
				"_spill_on_unavailable": false,
				"_fail_on_unavailable":  false,
			},
		},
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got  %#v\nwant %#v", v, want)
	}
}

func TestDecodeJobConfig(t *testing.T) {
	v, err := DecodeBytes(readFixture(t, "job_config.pkl"))
	if err != nil {
		t.Fatal(err)
	}
	jc, ok := v.(*Object)
	if !ok || jc.Module != "ray.job_config" || jc.Name != "JobConfig" || jc.Global {
		t.Fatalf("got %#v", v)
	}
	checks := map[string]any{
		"ray_namespace": "ns1",
		"metadata":      map[string]any{"owner": "me"},
		"runtime_env": map[string]any{
			"env_vars": map[string]any{"A": "1"},
			"pip":      []any{"requests"},
		},
	}
	for k, want := range checks {
		if got, ok := jc.Attr(k); !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", k, got, want)
		}
	}
}

func TestDecodeValues(t *testing.T) {
	v, err := DecodeBytes(readFixture(t, "values.pkl"))
	if err != nil {
		t.Fatal(err)
	}
	big80 := new(big.Int).Lsh(big.NewInt(1), 80)
	want := map[string]any{
		"none":      nil,
		"true":      true,
		"neg":       int64(-5),
		"int32":     int64(70000),
		"int64":     int64(1 << 40),
		"big":       big80,
		"float":     1.5,
		"str":       "s\u00e9",
		"bytes":     []byte("by"),
		"list":      []any{int64(1), []any{int64(2), int64(3)}},
		"set":       []any{int64(7)},
		"frozen":    []any{int64(8)},
		"bytearray": []byte("ba"),
		"nested":    map[string]any{"x": map[string]any{"y": int64(1)}},
		"int_keys":  map[any]any{int64(1): "a", int64(2): "b"},
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got  %#v\nwant %#v", v, want)
	}
}

func TestDecodeCycle(t *testing.T) {
	v, err := DecodeBytes(readFixture(t, "cycle.pkl"))
	if err != nil {
		t.Fatal(err)
	}
	l, ok := v.([]any)
	if !ok || len(l) != 2 || l[0] != int64(1) {
		t.Fatalf("got %T %d", v, len(l))
	}
	inner, ok := l[1].([]any)
	if !ok || len(inner) != 2 || &inner[0] != &l[0] {
		t.Errorf("l[1] is not l itself")
	}
}

func TestDecodeTaskArgsWithStubs(t *testing.T) {
	v, err := DecodeBytes(readFixture(t, "toplevel.pkl"))
	if err != nil {
		t.Fatal(err)
	}
	o1, o2, o3 := objStub(1), objStub(2), objStub(3)
	want := []any{
		[]any{&o1, int64(5), &o2},
		map[string]any{"a": &o3, "b": int64(7)},
	}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("got %#v", v)
	}
}

// TestDecodeUserObjects checks that by-value classes, dataclasses, slots and
// numpy arrays decode into Objects without error.
func TestDecodeUserObjects(t *testing.T) {
	for _, f := range []string{"closure_class.pkl", "dataclass.pkl", "numpy_bytes.pkl", "proto5.pkl", "all_types.pkl"} {
		if _, err := DecodeBytes(readFixture(t, f)); err != nil {
			if f == "proto5.pkl" && errors.Is(err, ErrUnsupported) {
				continue // {(1, 2): ...} and {b"k": ...} have no Go map key
			}
			t.Errorf("%s: %v", f, err)
		}
	}
	v, err := DecodeBytes(readFixture(t, "dataclass.pkl"))
	if err != nil {
		t.Fatal(err)
	}
	args := v.([]any)[0].([]any)
	point := args[0].(*Object)
	o1 := objStub(1)
	if point.Dict["x"] != int64(1) || point.Dict["y"] != 2.5 || !reflect.DeepEqual(point.Dict["ref"], &o1) {
		t.Errorf("Point attributes = %#v", point.Dict)
	}
	// Slotted: BUILD state (None, {"a": 1, "ref": r3}).
	slotted := args[2].(*Object)
	o3 := objStub(3)
	if slotted.Dict["a"] != int64(1) || !reflect.DeepEqual(slotted.Dict["ref"], &o3) {
		t.Errorf("Slotted attributes = %#v", slotted.Dict)
	}
	// Mixed: ({"extra": "e"}, {"a": 2, "ref": r1}).
	mixed := args[3].(*Object)
	if mixed.Dict["extra"] != "e" || mixed.Dict["a"] != int64(2) {
		t.Errorf("Mixed attributes = %#v", mixed.Dict)
	}
}

func TestDecodeErrors(t *testing.T) {
	if _, err := DecodeBytes(readFixture(t, "bytes_key.pkl")); !errors.Is(err, ErrUnsupported) {
		t.Errorf("bytes key: %v, want ErrUnsupported", err)
	}
	if _, err := DecodeBytes(readFixture(t, "bad_pid_str.pkl")); !errors.Is(err, ErrBadPersistentID) {
		t.Errorf("bad pid: %v, want ErrBadPersistentID", err)
	}
	deep := &pickleOps{}
	for range maxDepth + 1 {
		deep.op(opEmptyList)
	}
	for range maxDepth {
		deep.op(opAppend)
	}
	if _, err := DecodeBytes(deep.op(opStop).b); !errors.Is(err, ErrUnsupported) {
		t.Errorf("deep nesting: %v, want ErrUnsupported", err)
	}
}
