package clientserver

import (
	"bytes"
	"context"
	"time"

	"github.com/gray-cluster/gray/internal/ids"
	"github.com/gray-cluster/gray/objectstore"
	"github.com/gray-cluster/gray/taskspec"
)

// The stock server unpickles every ray.put value before storing it, so a
// value that cannot be loaded (a __setstate__ that raises) fails the put
// itself. gray's front end holds no Python; it has a worker load the values
// that can fail that way, those carrying classes pickled by value (defined
// in the client's __main__ or locally), with a zero-resource task whose
// only argument is the new object, resolved (loaded) before the task runs.

// putCheckMax bounds the values checked: by-value class instances are small;
// a big value is left for its first use to report.
const putCheckMax = 64 << 20

// putCheckTimeout bounds the wait for the checking task; a put whose check
// does not finish in time is accepted.
const putCheckTimeout = 60 * time.Second

// byValueMarkers are names of cloudpickle's class reconstructors.
var byValueMarkers = [][]byte{[]byte("_make_skeleton_class"), []byte("_class_setstate")}

// needsPutCheck reports whether a driver's put value should be loaded once
// before the put succeeds. Function and actor class payloads (clientRef
// set) load when their task runs.
func needsPutCheck(ss *session, chunks [][]byte, size int64, clientRef []byte) bool {
	if ss.workerID != "" || len(clientRef) > 0 || size > putCheckMax {
		return false
	}
	for _, c := range chunks {
		for _, m := range byValueMarkers {
			if bytes.Contains(c, m) {
				return true
			}
		}
	}
	return false
}

// putCheckFunction is the pickle of builtins.id: the checking task calls it
// on the loaded value.
var putCheckFunction = []byte("\x80\x04cbuiltins\nid\n.")

// putCheckHolder holds the checking function and the check results.
const putCheckHolder = "gray:put-check"

// putCheckArgs is the pickle of ([ClientObjectRef(oid)], {}): the task's
// (args, kwargs), whose one top-level ref the worker loads.
func putCheckArgs(oid ids.ObjectID) []byte {
	b := []byte("\x80\x04]cray.util.client.common\nClientObjectRef\nC")
	b = append(b, byte(len(oid)))
	b = append(b, oid[:]...)
	return append(b, "\x85Ra}\x86."...)
}

// checkPut loads a new put object on a worker and returns the pickled
// exception that loading it raised, or nil.
func (s *Server) checkPut(ss *session, oid ids.ObjectID) []byte {
	fid := s.putCheckFunctionID()
	if fid == (ids.ObjectID{}) {
		return nil
	}
	env, err := s.taskEnv(ss, options{})
	if err != nil {
		return nil
	}
	job := s.jobOf(ss)
	spec := &taskspec.TaskSpec{
		TaskID: ids.NewTaskID(ids.NilActorFor(job)), JobID: job, Name: "ray.put", FunctionID: fid,
		Args: [][]byte{putCheckArgs(oid)}, Deps: []ids.ObjectID{oid}, Pins: []ids.ObjectID{oid, fid},
		NumReturns: 1, Resources: map[string]float64{}, Env: env, BundleIndex: -1,
	}
	ret := spec.ReturnIDs()[0]
	s.store.Create(ret, putCheckHolder)
	defer s.store.Release(ret, putCheckHolder)
	unpin := s.pinArgs(spec.Pins)
	defer unpin()
	if err := s.cfg.Node.Submit(spec); err != nil {
		s.log.Debug("put check not submitted", "object", oid.Hex(), "err", err)
		return nil
	}
	ctx, cancel := context.WithTimeout(s.ctx, putCheckTimeout)
	defer cancel()
	obj, err := s.store.Wait(ctx, ret)
	if err != nil || obj == nil {
		s.log.Debug("put check did not finish", "object", oid.Hex(), "err", err)
		return nil
	}
	if obj.IsError {
		return concat(obj.Chunks)
	}
	return nil
}

// putCheckFunctionID stores the checking function once.
func (s *Server) putCheckFunctionID() ids.ObjectID {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.putCheckFn != (ids.ObjectID{}) && s.store.Contains(s.putCheckFn) {
		return s.putCheckFn
	}
	oid := ids.NewTaskID(ids.NilActorFor(ids.JobID{})).ReturnID(1)
	obj := &objectstore.Object{ID: oid, Chunks: [][]byte{putCheckFunction}, Size: int64(len(putCheckFunction))}
	if err := s.store.Put(obj, putCheckHolder); err != nil {
		s.log.Warn("cannot store the put check function", "err", err)
		return ids.ObjectID{}
	}
	s.putCheckFn = oid
	return oid
}
