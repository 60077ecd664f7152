package raylet

import "github.com/gray-cluster/gray/auth"

// opWorkerCred is the worker rpc asking for its credential.
const opWorkerCred = "worker_cred"

// workerCred answers a worker's credential request: HMAC of its id under
// the node's worker key, which the front end checks before letting the
// worker act for the job it runs. The id is the one the raylet started the
// process with (its socket connection), not one the worker names.
func (r *Raylet) workerCred(w *workerProc, f *frame) {
	reply := map[string]any{"t": "rpc_reply", "rpc_id": f.Header["rpc_id"], "result": ""}
	if len(r.cfg.WorkerKey) > 0 {
		reply["result"] = auth.WorkerCredential(r.cfg.WorkerKey, w.id)
	}
	_ = w.send(reply, nil)
}
