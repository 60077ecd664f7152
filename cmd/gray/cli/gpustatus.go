package cli

import (
	"fmt"

	"github.com/gray-cluster/gray/gpu"
)

// gpuLine is one GPU's line in `gray status`: its live numbers, and why it
// is withdrawn when it is.
func gpuLine(g gpu.Device) string {
	util := "util n/a"
	if g.UtilizationPct >= 0 {
		util = fmt.Sprintf("util %3d%%", g.UtilizationPct)
	}
	s := fmt.Sprintf("GPU %d  %-6s %s  mem %.1f / %.0f GiB  %s", g.Index, g.AcceleratorType, util,
		float64(g.MemoryUsedBytes)/(1<<30), float64(g.MemoryBytes)/(1<<30), g.UUID)
	if g.Withdrawn {
		s += "  WITHDRAWN: " + g.Reason
	}
	return s
}
