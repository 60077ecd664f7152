package gcs

import "github.com/gray-cluster/gray/internal/ids"

// NodeState is a node's liveness as the GCS records it.
type NodeState string

// Node states. Suspect nodes are kept (their work is paused, not lost) until
// they come back or are declared dead.
const (
	NodeAlive   NodeState = "ALIVE"
	NodeSuspect NodeState = "SUSPECT"
	NodeDead    NodeState = "DEAD"
)

// NodeInfo is the GCS record of one node.
type NodeInfo struct {
	ID        ids.NodeID
	IP        string
	Hostname  string
	IsHead    bool
	State     NodeState
	Total     map[string]float64
	Available map[string]float64
	Labels    map[string]string
	GPUs      string
	// DeathReason says why a dead node died.
	DeathReason string
}
