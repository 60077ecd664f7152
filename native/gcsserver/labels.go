package gcsserver

import (
	"slices"

	"github.com/gray-cluster/gray/proto/ray/commonpb"
)

// labelsMatch reports whether node labels satisfy every constraint of a
// label selector (IN: the label has one of the values; NOT_IN: it has none
// of them or is absent). An empty selector matches every node.
func labelsMatch(labels map[string]string, sel *commonpb.LabelSelector) bool {
	for _, c := range sel.GetLabelConstraints() {
		v, ok := labels[c.GetLabelKey()]
		switch c.GetOperator() {
		case commonpb.LabelSelectorOperator_LABEL_OPERATOR_NOT_IN:
			if ok && slices.Contains(c.GetLabelValues(), v) {
				return false
			}
		default: // IN
			if !ok || (len(c.GetLabelValues()) > 0 && !slices.Contains(c.GetLabelValues(), v)) {
				return false
			}
		}
	}
	return true
}

// selectorsOf is the label selectors to try in order: the task's own, then
// each fallback option.
func selectorsOf(spec *commonpb.TaskSpec) []*commonpb.LabelSelector {
	out := []*commonpb.LabelSelector{spec.GetLabelSelector()}
	for _, o := range spec.GetFallbackStrategy().GetOptions() {
		out = append(out, o.GetLabelSelector())
	}
	return out
}
