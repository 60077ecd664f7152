package membership

import (
	"encoding/json"
	"fmt"
	"maps"

	"github.com/hashicorp/memberlist"
)

// Roles a node can announce in Meta.Role.
const (
	RoleHead   = "head"
	RoleRaylet = "raylet"
)

// MetaMaxSize is the largest encoded metadata memberlist accepts
// (memberlist.MetaMaxSize). The encoding includes a few bytes reserved for
// the internal "leaving" flag.
const MetaMaxSize = memberlist.MetaMaxSize

// Meta is the metadata every member gossips about itself.
type Meta struct {
	NodeID      string            // stable node identity (defaults to Config.Name)
	Role        string            // RoleHead or RoleRaylet
	Region      string            // e.g. "eu-west"
	ControlAddr string            // host:port of the node's control-plane endpoint
	GPUs        string            // summary such as "8xH100"
	Labels      map[string]string // free-form scheduling labels
}

// Clone returns a deep copy of m.
func (m Meta) Clone() Meta {
	m.Labels = maps.Clone(m.Labels)
	return m
}

// Equal reports whether m and o carry the same values.
func (m Meta) Equal(o Meta) bool {
	return m.NodeID == o.NodeID && m.Role == o.Role && m.Region == o.Region &&
		m.ControlAddr == o.ControlAddr && m.GPUs == o.GPUs &&
		maps.Equal(m.Labels, o.Labels)
}

// wireMeta is Meta's compact JSON encoding. Leaving is set only by Leave.
type wireMeta struct {
	NodeID      string            `json:"id"`
	Role        string            `json:"r"`
	Region      string            `json:"rg,omitempty"`
	ControlAddr string            `json:"c,omitempty"`
	GPUs        string            `json:"g,omitempty"`
	Labels      map[string]string `json:"l,omitempty"`
	Leaving     bool              `json:"lv,omitempty"`
}

// validate checks the fields and that the encoding (with the leaving flag
// set, the largest form this node will ever gossip) fits memberlist's limit.
func (m Meta) validate() error {
	if m.NodeID == "" {
		return fmt.Errorf("%w: Meta.NodeID is empty", ErrInvalidMeta)
	}
	if m.Role != RoleHead && m.Role != RoleRaylet {
		return fmt.Errorf("%w: Meta.Role %q is not %q or %q", ErrInvalidMeta, m.Role, RoleHead, RoleRaylet)
	}
	b, err := encodeMeta(m, true)
	if err != nil {
		return err
	}
	if len(b) > MetaMaxSize {
		return fmt.Errorf("%w: %d bytes encoded, limit is %d (shorten Labels/GPUs/Region)",
			ErrMetaTooLarge, len(b), MetaMaxSize)
	}
	return nil
}

func encodeMeta(m Meta, leaving bool) ([]byte, error) {
	b, err := json.Marshal(wireMeta{
		NodeID: m.NodeID, Role: m.Role, Region: m.Region,
		ControlAddr: m.ControlAddr, GPUs: m.GPUs, Labels: m.Labels,
		Leaving: leaving,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: encode: %w", ErrInvalidMeta, err)
	}
	return b, nil
}

// decodeMeta parses a peer's gossiped metadata; leaving reports the hidden
// flag set by a peer's Leave.
func decodeMeta(b []byte) (m Meta, leaving bool, err error) {
	if len(b) == 0 {
		return Meta{}, false, fmt.Errorf("%w: empty", ErrInvalidMeta)
	}
	var w wireMeta
	if err := json.Unmarshal(b, &w); err != nil {
		return Meta{}, false, fmt.Errorf("%w: decode: %w", ErrInvalidMeta, err)
	}
	if w.NodeID == "" || (w.Role != RoleHead && w.Role != RoleRaylet) {
		return Meta{}, false, fmt.Errorf("%w: missing node id or role", ErrInvalidMeta)
	}
	return Meta{
		NodeID: w.NodeID, Role: w.Role, Region: w.Region,
		ControlAddr: w.ControlAddr, GPUs: w.GPUs, Labels: w.Labels,
	}, w.Leaving, nil
}
