// Package pickle reads and writes the Python pickle data exchanged with stock
// Ray Client (ray.util.client) processes.
//
// Clients send cloudpickle data (usually protocol 5) in which Ray references
// are pickle persistent ids: instances of
// ray.util.client.client_pickler.PickleStub, a namedtuple of
// (type, client_id, ref_id, name, baseline_options). The readers in this
// package find those stubs without running any Python: every global the
// pickle names is replaced by a permissive placeholder that can be called,
// instantiated, given state, filled as a dict/list/set and so on, so
// arbitrary user objects (functions and classes pickled by value, numpy
// arrays, dataclasses, ...) decode without knowing their classes.
//
//   - [ScanStubs] lists every stub in a pickle, in stream order.
//   - [ScanTaskArgs] additionally tells which stubs are direct task arguments
//     in the (args, kwargs) pickle a client sends with a task.
//   - [Decode] turns a plain pickle (task options, a JobConfig) into Go
//     values.
//
// The writers produce pickles that stock Python unpickles:
//
//   - [Call] and [Exception] build a pickle that calls module.name(*args)
//     when loaded, e.g. to raise ray.exceptions.GetTimeoutError on a client.
//   - [WrapList] wraps already pickled values into a list whose elements are
//     loaded with ray.util.client.client_pickler.loads_from_server, without
//     copying the values.
//
// Decoding uses github.com/nlpodyssey/gopickle. Before the data is handed to
// it, a linear opcode pass (see sanitize) rejects malformed streams, checks
// every length against the data actually present (so a forged length cannot
// force a huge allocation) and rewrites a few opcodes gopickle cannot handle
// safely; see sanitize for details. Any panic left in gopickle is recovered
// and reported as [ErrMalformed].
//
// The readers hold the whole pickle in memory: the io.Reader variants read
// their input fully first; the *Bytes variants never modify the slice they
// are given.
package pickle

import "errors"

// Sentinel errors. Errors returned by this package wrap one of them (test
// with errors.Is), except for errors from reading an io.Reader, which are
// returned wrapped as they are.
var (
	// ErrMalformed reports data that is not a pickle this package can load:
	// truncated streams, unknown opcodes, stack or memo misuse, out-of-band
	// buffers, ...
	ErrMalformed = errors.New("malformed pickle")

	// ErrBadPersistentID reports a persistent id that is not a valid Ray
	// Client PickleStub (including stubs of an unknown type).
	ErrBadPersistentID = errors.New("persistent id is not a Ray client stub")

	// ErrNotTaskArgs reports a pickle that does not hold an
	// (args, kwargs) pair with string keyword names.
	ErrNotTaskArgs = errors.New("pickle is not a task (args, kwargs) pair")

	// ErrUnsupported reports a value this package cannot represent: a dict
	// key with no comparable Go form, nesting deeper than the decoder's
	// limit, or a writer argument of an unsupported type.
	ErrUnsupported = errors.New("unsupported pickle value")
)
