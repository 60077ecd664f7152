package taskspec

// PGRequest is one placement group operation a worker asks for (the
// helpers of ray.util.placement_group). Op is pg_create, pg_remove, pg_get,
// pg_table or pg_wait.
type PGRequest struct {
	Op       string               `json:"op"`
	ID       string               `json:"id,omitempty"`
	Name     string               `json:"name,omitempty"`
	Strategy string               `json:"strategy,omitempty"`
	Bundles  []map[string]float64 `json:"bundles,omitempty"`
	Detached bool                 `json:"detached,omitempty"`
	// Timeout of pg_wait in seconds; negative waits until ctx ends.
	Timeout float64 `json:"timeout"`
}
