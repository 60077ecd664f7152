package clientserver

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/gray-cluster/gray/internal/pickle"
	pb "github.com/gray-cluster/gray/proto/rayclientpb"
	"github.com/gray-cluster/gray/taskspec"
)

// options are the merged @ray.remote and .options() keyword arguments.
type options map[string]any

// taskOptions decodes baseline then per-call options (later wins).
func taskOptions(t *pb.ClientTask) (options, error) {
	out := options{}
	for _, o := range []*pb.TaskOptions{t.BaselineOptions, t.Options} {
		if o == nil || len(o.PickledOptions) == 0 {
			continue
		}
		m, err := decodedOptions(o.PickledOptions)
		if err != nil {
			return nil, err
		}
		for k, val := range m {
			out[k] = val
		}
	}
	return out, nil
}

// optionsCache keeps decoded option pickles by their bytes: a program
// submits the same remote function with the same options thousands of
// times, and decoding the pickle was a tenth of the head's work per task.
// Decoded values are shared and must not be modified.
var optionsCache struct {
	sync.Mutex
	m map[string]map[string]any
}

const optionsCacheMax = 512

func decodedOptions(b []byte) (map[string]any, error) {
	optionsCache.Lock()
	m, ok := optionsCache.m[string(b)]
	optionsCache.Unlock()
	if ok {
		return m, nil
	}
	v, err := pickle.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	if v != nil {
		if m, ok = asDict(v); !ok {
			return nil, fmt.Errorf("options are a %T, not a dict", v)
		}
	}
	optionsCache.Lock()
	if optionsCache.m == nil || len(optionsCache.m) >= optionsCacheMax {
		optionsCache.m = map[string]map[string]any{}
	}
	optionsCache.m[string(b)] = m
	optionsCache.Unlock()
	return m, nil
}

// asDict converts decoded pickle dicts to map[string]any.
func asDict(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case *pickle.Object:
		// A dict subclass such as ray.runtime_env.RuntimeEnv.
		if m != nil && m.Items != nil {
			return asDict(m.Items)
		}
		return nil, false
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, val := range m {
			ks, ok := k.(string)
			if !ok {
				ks = fmt.Sprint(k)
			}
			out[ks] = val
		}
		return out, true
	}
	return nil, false
}

func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case float64:
		return n, true
	case bool:
		if n {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func (o options) float(key string, def float64) float64 {
	if f, ok := toFloat(o[key]); ok {
		return f
	}
	return def
}

func (o options) int(key string, def int) int {
	if f, ok := toFloat(o[key]); ok {
		return int(f)
	}
	return def
}

func (o options) str(key, def string) string {
	if s, ok := o[key].(string); ok && s != "" {
		return s
	}
	return def
}

// truthy is Python truthiness for bools, lists (retry_exceptions=[...]) etc.
func (o options) truthy(key string) bool {
	switch v := o[key].(type) {
	case nil:
		return false
	case bool:
		return v
	case []any:
		return len(v) > 0
	default:
		return true
	}
}

func (o options) dict(key string) map[string]any {
	m, _ := asDict(o[key])
	return m
}

// numReturns is 1 by default; "dynamic" generators return one ref.
func (o options) numReturns() int {
	switch v := o["num_returns"].(type) {
	case string:
		return 1
	default:
		if f, ok := toFloat(v); ok {
			return int(f)
		}
	}
	return 1
}

// resources is the task's resource demand in Ray's naming.
func (o options) resources(defaultCPU float64) map[string]float64 {
	r := map[string]float64{}
	if cpu := o.float("num_cpus", defaultCPU); cpu > 0 {
		r["CPU"] = cpu
	}
	if gpu := o.float("num_gpus", 0); gpu > 0 {
		r["GPU"] = gpu
	}
	if mem := o.float("memory", 0); mem > 0 {
		r["memory"] = mem
	}
	if acc := o.str("accelerator_type", ""); acc != "" {
		// Ray turns accelerator_type="H100" into a tiny demand on the label.
		r["accelerator_type:"+acc] = 0.001
	}
	for k, v := range o.dict("resources") {
		if f, ok := toFloat(v); ok && f > 0 {
			r[k] = f
		}
	}
	return r
}

// placement returns the placement group (hex id) and bundle index a task or
// actor is scheduled into, from PlacementGroupSchedulingStrategy or the
// legacy placement_group / placement_group_bundle_index options.
func (o options) placement() (string, int) {
	index := o.int("placement_group_bundle_index", -1)
	pg := o["placement_group"]
	if st, ok := o["scheduling_strategy"].(*pickle.Object); ok && st.Name == "PlacementGroupSchedulingStrategy" {
		pg = st.Dict["placement_group"]
		if f, ok := toFloat(st.Dict["placement_group_bundle_index"]); ok {
			index = int(f)
		}
	}
	obj, ok := pg.(*pickle.Object)
	if !ok || obj == nil {
		return "", -1
	}
	id, ok := obj.Dict["id"].(*pickle.Object)
	if !ok || id == nil || len(id.Args) == 0 {
		return "", -1
	}
	raw, ok := id.Args[0].([]byte)
	if !ok || len(raw) == 0 || allFF(raw) {
		return "", -1
	}
	return fmt.Sprintf("%x", raw), index
}

func allFF(b []byte) bool {
	for _, c := range b {
		if c != 0xff {
			return false
		}
	}
	return true
}

// scheduling returns the scheduling strategy and label selector options in
// the form the head's placement uses.
func (o options) scheduling() taskspec.Scheduling {
	var s taskspec.Scheduling
	switch st := o["scheduling_strategy"].(type) {
	case string:
		if st == "SPREAD" {
			s.Kind = "SPREAD"
		}
	case *pickle.Object:
		if st != nil && st.Name == "NodeAffinitySchedulingStrategy" {
			attrs := objectAttrs(st)
			if id, ok := attrs["node_id"].(string); ok {
				s.Kind, s.NodeID = "NODE_AFFINITY", id
				s.Soft, _ = attrs["soft"].(bool)
			}
		}
	}
	for k, v := range o.dict("label_selector") {
		if str, ok := v.(string); ok {
			if s.Labels == nil {
				s.Labels = map[string]string{}
			}
			s.Labels[k] = str
		}
	}
	return s
}
