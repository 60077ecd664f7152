package pickle

import "github.com/nlpodyssey/gopickle/types"

// pyObj is the placeholder handed to gopickle for every global a pickle
// names (global is true) and for every object made from one by REDUCE,
// NEWOBJ, NEWOBJ_EX, OBJ or INST. It accepts every operation the pickle
// machine can apply to an object and records what it saw, so unknown classes
// and functions never fail to load. [Decode] turns it into an [*Object].
type pyObj struct {
	module, name string
	global       bool
	// callable is the object that was called to make this one, when that
	// was not a global (e.g. a class built at load time by cloudpickle).
	callable *pyObj
	args     []any
	state    any
	hasState bool
	attrs    *types.Dict // __dict__ and slot attributes set by BUILD
	items    *types.Dict // SETITEM(S) on the object (dict subclasses)
	list     []any       // APPEND(S) on the object (list and set subclasses)
}

var (
	_ types.Callable        = (*pyObj)(nil)
	_ types.PyNewable       = (*pyObj)(nil)
	_ types.PyStateSettable = (*pyObj)(nil)
	_ types.PyDictSettable  = (*pyObj)(nil)
	_ types.PyAttrSettable  = (*pyObj)(nil)
	_ types.DictSetter      = (*pyObj)(nil)
	_ types.ListAppender    = (*pyObj)(nil)
	_ types.SetAdder        = (*pyObj)(nil)
)

// reconstructorAlias replaces the module name copy_reg (same length) in
// GLOBAL copy_reg._reconstructor; see sanitize. The NUL byte keeps it from
// naming a real module.
const reconstructorAlias = "copyreg\x00"

// findClass is the gopickle FindClass hook: every global is a placeholder.
// (gopickle itself resolves builtins.list, builtins.dict,
// collections.OrderedDict and a few Python 2 names before asking.)
func findClass(module, name string) (any, error) {
	if module == reconstructorAlias {
		module = "copyreg"
	}
	return &pyObj{module: module, name: name, global: true}, nil
}

func (o *pyObj) qualName() string { return o.module + "." + o.name }

// instance returns a new object made by calling or instantiating o.
func (o *pyObj) instance(args []any) *pyObj {
	if o.global {
		return &pyObj{module: o.module, name: o.name, args: args}
	}
	return &pyObj{callable: o, args: args}
}

// PyNew implements NEWOBJ and NEWOBJ_EX (gopickle appends the NEWOBJ_EX
// keyword dict to args).
func (o *pyObj) PyNew(args ...any) (any, error) { return o.instance(args), nil }

// Call implements REDUCE, OBJ and INST. A few globals that only rebuild
// plain values get their Python meaning; everything else yields a generic
// instance.
func (o *pyObj) Call(args ...any) (any, error) {
	if o.global {
		if v, ok := o.callBuiltin(args); ok {
			return v, nil
		}
	}
	return o.instance(args), nil
}

func (o *pyObj) callBuiltin(args []any) (any, bool) {
	switch o.qualName() {
	case "copyreg._reconstructor":
		// _reconstructor(cls, base, state): base.__new__(cls, state), or
		// object.__new__(cls) when base is object. PickleStub arrives so.
		if len(args) != 3 {
			return nil, false
		}
		if isObjectClass(args[1]) {
			return newInstance(args[0], nil), true
		}
		return newInstance(args[0], args[2:]), true
	case "copyreg.__newobj__", "copy_reg.__newobj__":
		if len(args) == 0 {
			return nil, false
		}
		return newInstance(args[0], args[1:]), true
	case "copyreg.__newobj_ex__", "copy_reg.__newobj_ex__":
		if len(args) != 3 {
			return nil, false
		}
		t, ok := args[1].(*types.Tuple)
		if !ok {
			return nil, false
		}
		return newInstance(args[0], append(append([]any(nil), *t...), args[2])), true
	case "builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset":
		// Protocols < 4 pickle sets as set(list); decode them as lists like
		// the EMPTY_SET form (see sanitize).
		switch {
		case len(args) == 0:
			return types.NewList(), true
		case len(args) == 1:
			if items, ok := sequence(args[0]); ok {
				return types.NewListFromSlice(append([]any(nil), items...)), true
			}
		}
	case "builtins.bytearray", "__builtin__.bytearray":
		if len(args) == 0 {
			return types.NewByteArray(), true
		}
		if b, ok := args[0].([]byte); ok && len(args) == 1 {
			return types.NewByteArrayFromSlice(b), true
		}
		if b, ok := latin1(args); ok {
			return types.NewByteArrayFromSlice(b), true
		}
	case "_codecs.encode":
		// Protocols < 3 pickle bytes as _codecs.encode(str, "latin1").
		if b, ok := latin1(args); ok {
			return b, true
		}
	}
	return nil, false
}

// isObjectClass reports whether v is Python's object class.
func isObjectClass(v any) bool {
	switch b := v.(type) {
	case *types.ObjectClass:
		return true
	case *pyObj:
		return b.global && b.name == "object" && (b.module == "builtins" || b.module == "__builtin__")
	}
	return false
}

// newInstance implements cls.__new__(cls, *args) for the copyreg helpers.
func newInstance(cls any, args []any) any {
	switch c := cls.(type) {
	case *pyObj:
		return c.instance(args)
	case *types.List:
		return types.NewList()
	case *types.Dict:
		return types.NewDict()
	case *types.OrderedDictClass:
		return types.NewOrderedDict()
	case types.PyNewable:
		if v, err := c.PyNew(args...); err == nil {
			return v
		}
	}
	return &pyObj{args: append([]any{cls}, args...)}
}

// sequence returns the items of a decoded list or tuple.
func sequence(v any) ([]any, bool) {
	switch s := v.(type) {
	case *types.List:
		return *s, true
	case *types.Tuple:
		return *s, true
	}
	return nil, false
}

// latin1 encodes args (str, "latin1"|"latin-1") like Python's
// _codecs.encode; ok is false for anything else.
func latin1(args []any) ([]byte, bool) {
	if len(args) != 2 {
		return nil, false
	}
	s, ok := args[0].(string)
	enc, ok2 := args[1].(string)
	if !ok || !ok2 || (enc != "latin1" && enc != "latin-1" && enc != "latin_1") {
		return nil, false
	}
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xff {
			return nil, false
		}
		out = append(out, byte(r))
	}
	return out, true
}

// PySetState implements BUILD: it keeps the raw state and, like Python's
// default __setstate__, merges a dict state and a (dict, slotstate) pair
// into the attributes.
func (o *pyObj) PySetState(state any) error {
	o.state, o.hasState = state, true
	if t, ok := state.(*types.Tuple); ok && len(*t) == 2 {
		o.mergeAttrs((*t)[0])
		o.mergeAttrs((*t)[1])
		return nil
	}
	o.mergeAttrs(state)
	return nil
}

func (o *pyObj) mergeAttrs(state any) {
	d, ok := state.(*types.Dict)
	if !ok {
		return
	}
	for _, e := range *d {
		o.setAttr(e.Key, e.Value)
	}
}

func (o *pyObj) setAttr(key, value any) {
	if o.attrs == nil {
		o.attrs = types.NewDict()
	}
	o.attrs.Set(key, value)
}

// PyDictSet and PySetAttr are only reached by gopickle's own BUILD logic,
// which PySetState pre-empts; they are implemented for completeness.
func (o *pyObj) PyDictSet(key, value any) error { o.setAttr(key, value); return nil }

// PySetAttr implements types.PyAttrSettable.
func (o *pyObj) PySetAttr(key string, value any) error { o.setAttr(key, value); return nil }

// Set implements SETITEM(S) for dict subclasses.
func (o *pyObj) Set(key, value any) {
	if o.items == nil {
		o.items = types.NewDict()
	}
	o.items.Set(key, value)
}

// Append implements APPEND(S) for list subclasses.
func (o *pyObj) Append(v any) { o.list = append(o.list, v) }

// Add implements ADDITEMS (not reached after sanitize; kept for safety).
func (o *pyObj) Add(v any) { o.list = append(o.list, v) }
