package pickle

import (
	"fmt"
	"io"

	"github.com/nlpodyssey/gopickle/types"
)

// Stub types: the PickleStub.type values Ray client pickles carry.
const (
	StubRay                      = "Ray"                      // the ray module itself; RefID is empty
	StubObject                   = "Object"                   // an ObjectRef; RefID is the 28-byte object id
	StubActor                    = "Actor"                    // an actor handle; RefID is the 16-byte actor id
	StubRemoteFunc               = "RemoteFunc"               // a @ray.remote function; RefID is the object id the client put it under
	StubRemoteFuncSelfReference  = "RemoteFuncSelfReference"  // a remote function inside its own definition; RefID is a client-side id
	StubRemoteActor              = "RemoteActor"              // a @ray.remote class; RefID is the object id the client put it under
	StubRemoteActorSelfReference = "RemoteActorSelfReference" // an actor class inside its own definition; RefID is a client-side id
	StubRemoteMethod             = "RemoteMethod"             // actor.method; RefID is the actor id, Name the method
)

// stubModule and stubName name the PickleStub namedtuple.
const stubModule, stubName = "ray.util.client.client_pickler", "PickleStub"

// Stub is a decoded ray.util.client.client_pickler.PickleStub persistent id.
type Stub struct {
	Type     string // one of the Stub* constants
	ClientID string
	RefID    []byte
	Name     string // PickleStub.name; meaningful when HasName
	HasName  bool   // PickleStub.name was not None
	// Options is PickleStub.baseline_options, decoded like [DecodeBytes]
	// decodes a dict; nil when it was None. Stubs of one pickle that share a
	// memoized options dict share the map.
	Options map[string]any
}

// ScanStubs reads a whole pickle from r and returns every persistent-id stub
// it contains; see [ScanStubsBytes].
func ScanStubs(r io.Reader) ([]Stub, error) {
	data, err := readAll(r)
	if err != nil {
		return nil, err
	}
	_, stubs, err := scan(data, true)
	return stubs, err
}

// ScanStubsBytes returns every persistent-id stub in a pickle, in stream
// order (the order of the BINPERSID opcodes), duplicates kept: a ref used
// twice, whether re-encoded or memoized (BINGET + BINPERSID), is listed
// twice. Objects of unknown classes, functions and classes pickled by value
// are loaded with permissive placeholders and never cause an error.
// A persistent id that is not a valid PickleStub (for example the text id
// protocol 0 writes) fails with [ErrBadPersistentID].
func ScanStubsBytes(data []byte) ([]Stub, error) {
	_, stubs, err := scan(data, false)
	return stubs, err
}

// scan loads data and returns gopickle's root value (in which stubs appear
// as *Stub) and all stubs in stream order.
func scan(data []byte, owned bool) (any, []Stub, error) {
	var (
		stubs []Stub
		conv  converter
	)
	root, err := load(data, owned, func(pid any) (any, error) {
		s, err := parseStub(pid, &conv)
		if err != nil {
			return nil, err
		}
		stubs = append(stubs, *s)
		return s, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return root, stubs, nil
}

// parseStub converts a persistent id loaded by gopickle into a *Stub. A
// PickleStub arrives as an instance of the placeholder class made either by
// copyreg._reconstructor(PickleStub, tuple, fields) (what Ray's pickler
// writes) or by NEWOBJ(PickleStub, *fields) (plain namedtuple pickling).
func parseStub(pid any, conv *converter) (*Stub, error) {
	o, ok := pid.(*pyObj)
	if !ok || o.global || o.module != stubModule || o.name != stubName {
		return nil, fmt.Errorf("%w: got %T", ErrBadPersistentID, pid)
	}
	fields := o.args
	if len(fields) == 1 {
		if t, ok := fields[0].(*types.Tuple); ok {
			fields = *t
		}
	}
	if len(fields) != 5 {
		return nil, fmt.Errorf("%w: PickleStub with %d fields", ErrBadPersistentID, len(fields))
	}
	var s Stub
	if s.Type, ok = fields[0].(string); !ok {
		return nil, fmt.Errorf("%w: type is %T, not str", ErrBadPersistentID, fields[0])
	}
	switch s.Type {
	case StubRay, StubObject, StubActor, StubRemoteFunc, StubRemoteFuncSelfReference,
		StubRemoteActor, StubRemoteActorSelfReference, StubRemoteMethod:
	default:
		return nil, fmt.Errorf("%w: unknown stub type %q", ErrBadPersistentID, s.Type)
	}
	if s.ClientID, ok = fields[1].(string); !ok {
		return nil, fmt.Errorf("%w: client_id is %T, not str", ErrBadPersistentID, fields[1])
	}
	if s.RefID, ok = fields[2].([]byte); !ok {
		return nil, fmt.Errorf("%w: ref_id is %T, not bytes", ErrBadPersistentID, fields[2])
	}
	switch n := fields[3].(type) {
	case nil:
	case string:
		s.Name, s.HasName = n, true
	default:
		return nil, fmt.Errorf("%w: name is %T, not str or None", ErrBadPersistentID, n)
	}
	if fields[4] != nil {
		if _, ok := fields[4].(*types.Dict); !ok {
			return nil, fmt.Errorf("%w: baseline_options is %T, not dict or None", ErrBadPersistentID, fields[4])
		}
		opts, err := conv.value(fields[4])
		if err != nil {
			return nil, err
		}
		if s.Options, ok = opts.(map[string]any); !ok {
			return nil, fmt.Errorf("%w: baseline_options has non-str keys", ErrBadPersistentID)
		}
	}
	return &s, nil
}

// TaskArgs describes the stubs in a task's (args, kwargs) pickle.
type TaskArgs struct {
	// TopLevel lists the stubs that are arguments themselves: elements of
	// args (in order), then values of kwargs (in dict order).
	TopLevel []TopLevelRef
	// All lists every stub in the pickle, top-level or nested, in stream
	// order with duplicates kept (as [ScanStubsBytes] does).
	All []Stub
	// NumArgs is len(args).
	NumArgs int
	// KwargNames are the keyword names in dict order.
	KwargNames []string
}

// TopLevelRef is a stub passed directly as a task argument.
type TopLevelRef struct {
	// Index is the position in args, or -1 for a keyword argument.
	Index int
	// Kwarg is the keyword name when Index is -1.
	Kwarg string
	Stub  Stub
}

// ScanTaskArgs reads a whole task-argument pickle from r; see
// [ScanTaskArgsBytes].
func ScanTaskArgs(r io.Reader) (TaskArgs, error) {
	data, err := readAll(r)
	if err != nil {
		return TaskArgs{}, err
	}
	return scanTaskArgs(data, true)
}

// ScanTaskArgsBytes parses the pickle of (args, kwargs) that Ray clients send
// as task data (args is a tuple from call_remote or a list from get_actor;
// kwargs is a dict with str keys) and reports which stubs are top-level
// arguments, besides all stubs found anywhere. A pickle of another shape
// fails with [ErrNotTaskArgs].
func ScanTaskArgsBytes(data []byte) (TaskArgs, error) { return scanTaskArgs(data, false) }

func scanTaskArgs(data []byte, owned bool) (TaskArgs, error) {
	root, stubs, err := scan(data, owned)
	if err != nil {
		return TaskArgs{}, err
	}
	pair, ok := root.(*types.Tuple)
	if !ok || len(*pair) != 2 {
		return TaskArgs{}, fmt.Errorf("%w: top level is %T, not a 2-tuple", ErrNotTaskArgs, root)
	}
	args, ok := sequence((*pair)[0])
	if !ok {
		return TaskArgs{}, fmt.Errorf("%w: args is %T, not a list or tuple", ErrNotTaskArgs, (*pair)[0])
	}
	kwargs, ok := (*pair)[1].(*types.Dict)
	if !ok {
		return TaskArgs{}, fmt.Errorf("%w: kwargs is %T, not a dict", ErrNotTaskArgs, (*pair)[1])
	}
	ta := TaskArgs{All: stubs, NumArgs: len(args), KwargNames: make([]string, 0, len(*kwargs))}
	for i, a := range args {
		if s, ok := a.(*Stub); ok {
			ta.TopLevel = append(ta.TopLevel, TopLevelRef{Index: i, Stub: *s})
		}
	}
	seen := make(map[string]struct{}, len(*kwargs))
	for _, e := range *kwargs {
		name, ok := e.Key.(string)
		if !ok {
			return TaskArgs{}, fmt.Errorf("%w: keyword name is %T, not str", ErrNotTaskArgs, e.Key)
		}
		if _, dup := seen[name]; dup {
			// Python's pickler never writes a dict key twice.
			return TaskArgs{}, fmt.Errorf("%w: keyword %q given twice", ErrNotTaskArgs, name)
		}
		seen[name] = struct{}{}
		ta.KwargNames = append(ta.KwargNames, name)
		if s, ok := e.Value.(*Stub); ok {
			ta.TopLevel = append(ta.TopLevel, TopLevelRef{Index: -1, Kwarg: name, Stub: *s})
		}
	}
	return ta, nil
}
