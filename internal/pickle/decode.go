package pickle

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/big"

	gopickle "github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// maxDepth bounds the nesting [Decode] follows. CPython cannot pickle objects
// nested much deeper than its recursion limit (1000) anyway.
const maxDepth = 10000

// Object is how [Decode] represents a Python object of a class it does not
// know, and a reference to a module-level name (a class or function used as
// a value).
type Object struct {
	// Module and Name are the qualified name of the global the object was
	// made from (its class, or the function that returned it), or the name
	// it refers to when Global is true. Both are empty when the callable was
	// itself a decoded object; see Callable.
	Module, Name string
	// Global is true when the value is the global Module.Name itself rather
	// than something made by calling it.
	Global bool
	// Callable is the object that was called to make this one when it was
	// not a global (for example a class that cloudpickle rebuilds at load
	// time); nil otherwise.
	Callable *Object
	// Args are the positional arguments of the call or of __new__. For
	// NEWOBJ_EX the keyword-argument dict is appended as the last element.
	// For copyreg._reconstructor(cls, base, state) they are [state], or
	// empty when base is object.
	Args []any
	// State is the (decoded) state of the last BUILD opcode, or nil.
	State any
	// Dict holds the attributes Python's default __setstate__ would set: the
	// string-keyed entries of a dict state, or of both halves of a
	// (dict, slotstate) state.
	Dict map[string]any
	// Items holds entries set with SETITEM(S) (dict subclasses), as a
	// map[string]any or map[any]any like any decoded dict; nil if none.
	Items any
	// List holds elements added with APPEND(S) or ADDITEMS (list and set
	// subclasses); nil if none.
	List []any
}

// Attr returns the attribute name from o.Dict.
func (o *Object) Attr(name string) (any, bool) {
	v, ok := o.Dict[name]
	return v, ok
}

// Decode reads a whole pickle from r and decodes it into Go values; see
// [DecodeBytes].
func Decode(r io.Reader) (any, error) {
	data, err := readAll(r)
	if err != nil {
		return nil, err
	}
	return decode(data, true)
}

// DecodeBytes decodes a pickle into Go values:
//
//   - None → nil; bool → bool; int → int64, or *big.Int when it does not fit;
//     float → float64; str → string; bytes and bytearray → []byte
//   - list, tuple, set and frozenset → []any (set order is the stream order)
//   - dict and OrderedDict → map[string]any when every key is a str (the
//     common case: options, runtime_env, metadata, instance state), otherwise
//     map[any]any; keys must then decode to comparable values (not bytes,
//     tuples or lists), else the error wraps [ErrUnsupported]
//   - instances of other classes, and globals used as values → *[Object]
//   - persistent ids that are Ray client stubs → *[Stub]; other persistent
//     ids fail with [ErrBadPersistentID]
//
// Shared and self-referencing containers decode to shared Go values (a list
// that contains itself becomes a []any that contains itself). Because gopickle
// resolves builtins.list and builtins.dict itself, those two classes decode as
// an empty []any and an empty map[string]any when used as values.
func DecodeBytes(data []byte) (any, error) { return decode(data, false) }

func decode(data []byte, owned bool) (any, error) {
	c := converter{}
	root, err := load(data, owned, func(pid any) (any, error) {
		return parseStub(pid, &c)
	})
	if err != nil {
		return nil, err
	}
	return c.value(root)
}

// load runs gopickle over data with the permissive class resolver and the
// given persistent-id hook.
func load(data []byte, owned bool, persistent func(pid any) (any, error)) (v any, err error) {
	data, err = sanitize(data, owned)
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("%w: decoder panic: %v", ErrMalformed, r)
		}
	}()
	u := gopickle.NewUnpickler(bytes.NewReader(data))
	u.FindClass = findClass
	u.PersistentLoad = persistent
	v, err = u.Load()
	if err != nil {
		if errors.Is(err, ErrBadPersistentID) || errors.Is(err, ErrUnsupported) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return v, nil
}

// readAll reads r to the end, sizing the buffer up front when r knows its
// length (bytes.Reader, bytes.Buffer, strings.Reader).
func readAll(r io.Reader) ([]byte, error) {
	var buf []byte
	if l, ok := r.(interface{ Len() int }); ok {
		buf = make([]byte, 0, l.Len()+1)
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, fmt.Errorf("pickle: reading input: %w", err)
		}
	}
}

// converter turns gopickle's values into the documented Go values. seen maps
// every container already converted to its result, which keeps shared and
// cyclic structures linear.
type converter struct {
	seen  map[any]any
	depth int
}

func (c *converter) value(v any) (out any, err error) {
	switch x := v.(type) {
	case nil, bool, int64, float64, string, []byte, *Stub:
		return x, nil
	case int:
		return int64(x), nil
	case *big.Int:
		if x.IsInt64() {
			return x.Int64(), nil
		}
		return x, nil
	case *types.ByteArray:
		return []byte(*x), nil
	}
	switch v.(type) {
	case *types.List, *types.Tuple, *types.Dict, *types.OrderedDict,
		*types.Set, *types.FrozenSet, *pyObj:
	default:
		// Other gopickle values (e.g. array.array contents as typed slices).
		return v, nil
	}
	if r, ok := c.seen[v]; ok {
		return r, nil
	}
	if c.depth >= maxDepth {
		return nil, fmt.Errorf("%w: nesting deeper than %d", ErrUnsupported, maxDepth)
	}
	c.depth++
	defer func() { c.depth-- }()
	if c.seen == nil {
		c.seen = make(map[any]any)
	}
	switch x := v.(type) {
	case *types.List:
		return c.slice(x, *x)
	case *types.Tuple:
		return c.slice(x, *x)
	case *types.Dict:
		return c.dict(x, *x)
	case *types.OrderedDict:
		entries := make(types.Dict, 0, x.Len())
		for e := x.List.Front(); e != nil; e = e.Next() {
			oe := e.Value.(*types.OrderedDictEntry)
			entries = append(entries, types.DictEntry{Key: oe.Key, Value: oe.Value})
		}
		return c.dict(x, entries)
	case *types.Set:
		return c.slice(x, keys(*x))
	case *types.FrozenSet:
		return c.slice(x, keys(*x))
	case *pyObj:
		return c.object(x)
	}
	return v, nil
}

func keys[M ~map[any]V, V any](m M) []any {
	out := make([]any, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func (c *converter) slice(key any, items []any) ([]any, error) {
	out := make([]any, len(items))
	c.seen[key] = out
	for i, it := range items {
		v, err := c.value(it)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

func (c *converter) dict(key any, entries types.Dict) (any, error) {
	allStr := true
	for _, e := range entries {
		if _, ok := e.Key.(string); !ok {
			allStr = false
			break
		}
	}
	if allStr {
		out := make(map[string]any, len(entries))
		c.seen[key] = out
		for _, e := range entries {
			v, err := c.value(e.Value)
			if err != nil {
				return nil, err
			}
			out[e.Key.(string)] = v
		}
		return out, nil
	}
	out := make(map[any]any, len(entries))
	c.seen[key] = out
	for _, e := range entries {
		k, err := c.value(e.Key)
		if err != nil {
			return nil, err
		}
		switch k.(type) {
		case nil, bool, int64, float64, string, *big.Int, *Object, *Stub:
		default:
			return nil, fmt.Errorf("%w: dict key of type %T", ErrUnsupported, k)
		}
		v, err := c.value(e.Value)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

func (c *converter) object(o *pyObj) (*Object, error) {
	out := &Object{Module: o.module, Name: o.name, Global: o.global}
	c.seen[o] = out
	if o.callable != nil {
		cv, err := c.value(o.callable)
		if err != nil {
			return nil, err
		}
		out.Callable, _ = cv.(*Object)
	}
	var err error
	if len(o.args) > 0 {
		if out.Args, err = c.slice(&o.args, o.args); err != nil {
			return nil, err
		}
	}
	if o.hasState {
		if out.State, err = c.value(o.state); err != nil {
			return nil, err
		}
	}
	if o.attrs != nil {
		out.Dict = make(map[string]any, o.attrs.Len())
		for _, e := range *o.attrs {
			k, ok := e.Key.(string)
			if !ok {
				continue
			}
			if out.Dict[k], err = c.value(e.Value); err != nil {
				return nil, err
			}
		}
	}
	if o.items != nil {
		if out.Items, err = c.value(o.items); err != nil {
			return nil, err
		}
	}
	if len(o.list) > 0 {
		if out.List, err = c.slice(&o.list, o.list); err != nil {
			return nil, err
		}
	}
	return out, nil
}
