package watch

import (
	"fmt"
	"maps"
	"strings"

	"github.com/gray-cluster/gray/gpu"
	"github.com/gray-cluster/gray/gpu/verify"
)

// accelPrefix starts Ray's accelerator type resources.
const accelPrefix = "accelerator_type:"

// Verdict is one GPU slot's outcome of a verification round.
type Verdict struct {
	OK     bool
	Reason string        // why not, when !OK
	Result verify.Result // what the checker reported (zero when the device is gone)
}

// Judge turns one round of results into a verdict per slot (n GPUs, by
// CUDA ordinal). err (no driver, no device) fails every slot; a slot the
// checker did not report is gone; a slot whose UUID differs from the one
// it had (uuids[i], "" when unknown) holds another device now.
func Judge(n int, results []verify.Result, err error, uuids []string) []Verdict {
	out := make([]Verdict, n)
	for i := range out {
		switch {
		case err != nil:
			out[i] = Verdict{Reason: err.Error()}
		case i >= len(results):
			out[i] = Verdict{Reason: fmt.Sprintf("device gone: the driver shows %d GPUs", len(results))}
		case i < len(uuids) && uuids[i] != "" && results[i].UUID != "" && results[i].UUID != uuids[i]:
			out[i] = Verdict{Reason: fmt.Sprintf("device changed: was %s, now %s", uuids[i], results[i].UUID), Result: results[i]}
		case !results[i].Passed:
			reason := results[i].Reason
			if reason == "" {
				reason = "verification failed"
			}
			out[i] = Verdict{Reason: reason, Result: results[i]}
		default:
			out[i] = Verdict{OK: true, Result: results[i]}
		}
	}
	return out
}

// Offer is the node's resources with the withdrawn GPUs taken out: GPU
// counts only the slots offered, and an accelerator_type:<model> resource
// stays only while a GPU of that model (models, by slot) is offered. A slot
// of unknown model keeps every accelerator type while it is offered.
func Offer(base map[string]float64, models []string, off []bool) map[string]float64 {
	out := maps.Clone(base)
	withdrawn := 0
	keep := map[string]bool{}
	unknown := false
	for i, o := range off {
		switch {
		case o:
			withdrawn++
		case i < len(models) && models[i] != "":
			keep[models[i]] = true
		default:
			unknown = true
		}
	}
	if withdrawn == 0 {
		return out
	}
	if g := base["GPU"] - float64(withdrawn); g > 1e-9 {
		out["GPU"] = g
	} else {
		delete(out, "GPU")
	}
	for k := range base {
		if m, ok := strings.CutPrefix(k, accelPrefix); ok {
			if _, gpus := out["GPU"]; !gpus || (!keep[m] && !unknown) {
				delete(out, k)
			}
		}
	}
	return out
}

// Mark returns devs with the GPUs of withdrawn slots marked, matched by
// UUID (uuids, by slot) or, for a slot of unknown UUID, by index.
func Mark(devs []gpu.Device, verdicts []Verdict, uuids []string) []gpu.Device {
	out := make([]gpu.Device, len(devs))
	byUUID := map[string]string{}
	byIndex := map[int]string{}
	for i, v := range verdicts {
		if v.OK {
			continue
		}
		if i < len(uuids) && uuids[i] != "" {
			byUUID[uuids[i]] = v.Reason
		} else {
			byIndex[i] = v.Reason
		}
	}
	for i, d := range devs {
		d.Withdrawn, d.Reason = false, ""
		if r, ok := byUUID[d.UUID]; ok && d.UUID != "" {
			d.Withdrawn, d.Reason = true, r
		} else if r, ok := byIndex[d.Index]; ok {
			d.Withdrawn, d.Reason = true, r
		}
		out[i] = d
	}
	return out
}

// labelPrefix starts the labels GPU verification sets.
const labelPrefix = "gray.io/gpu-"

// Labels are a node's labels with the GPU verification labels replaced by
// gpuLabels (base is returned as it is when gpuLabels is nil: GPUs not
// verified).
func Labels(base, gpuLabels map[string]string) map[string]string {
	if gpuLabels == nil {
		return base
	}
	out := make(map[string]string, len(base)+len(gpuLabels))
	for k, v := range base {
		if !strings.HasPrefix(k, labelPrefix) {
			out[k] = v
		}
	}
	maps.Copy(out, gpuLabels)
	return out
}

// Summary names the offered GPUs briefly, like "8xH100" or "7xH100 (1
// withdrawn)".
func Summary(devs []gpu.Device) string {
	if len(devs) == 0 {
		return ""
	}
	offered, withdrawn, model := 0, 0, ""
	for _, d := range devs {
		if d.Withdrawn {
			withdrawn++
			continue
		}
		offered++
		if model == "" {
			model = d.AcceleratorType
		}
	}
	if model == "" {
		model = devs[0].AcceleratorType
	}
	s := fmt.Sprintf("%dx%s", offered, model)
	if withdrawn > 0 {
		s += fmt.Sprintf(" (%d withdrawn)", withdrawn)
	}
	return s
}
