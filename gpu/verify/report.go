package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// Report is what RunCheck prints (as indented JSON).
type Report struct {
	Driver        string            `json:"driver,omitempty"`         // the library loaded
	DriverVersion int               `json:"driver_version,omitempty"` // e.g. 13000
	Available     bool              `json:"available"`                // a driver and a device were found
	Note          string            `json:"note,omitempty"`           // why not
	Devices       []Result          `json:"devices"`
	Labels        map[string]string `json:"labels,omitempty"`
	Passed        bool              `json:"passed"`
	TookMS        float64           `json:"took_ms"`
}

// ErrCheckFailed is returned by RunCheck when a device failed verification.
var ErrCheckFailed = errors.New("gpu check failed")

// RunCheck opens the driver, verifies every device with the default options
// and writes a JSON Report to w. With no driver or no device it writes a
// report with "available": false and returns nil (nothing to verify is not
// a failure); a device that fails makes it return an error wrapping
// ErrCheckFailed after writing the report. For `gray gpu-check`.
func RunCheck(ctx context.Context, w io.Writer) error {
	return RunCheckWith(ctx, w, Options{})
}

// RunCheckWith is RunCheck with explicit options.
func RunCheckWith(ctx context.Context, w io.Writer, opts Options) error {
	start := time.Now()
	rep := Report{Devices: []Result{}}
	write := func() error {
		rep.TookMS = float64(time.Since(start).Microseconds()) / 1e3
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	d, err := Open()
	if err != nil {
		if errors.Is(err, ErrNoDriver) || errors.Is(err, ErrNoDevice) {
			rep.Note = err.Error()
			return write()
		}
		rep.Note = err.Error()
		if werr := write(); werr != nil {
			return werr
		}
		return fmt.Errorf("%w: %w", ErrCheckFailed, err)
	}
	rep.Driver, rep.DriverVersion = d.Path, d.Version
	rs, err := d.VerifyAll(ctx, opts)
	if err != nil {
		rep.Note = err.Error()
		if werr := write(); werr != nil {
			return werr
		}
		return fmt.Errorf("%w: %w", ErrCheckFailed, err)
	}
	rep.Available = len(rs) > 0
	rep.Devices = rs
	rep.Labels = Labels(rs)
	rep.Passed = true
	var failed []error
	for _, r := range rs {
		if !r.Passed {
			rep.Passed = false
			failed = append(failed, fmt.Errorf("gpu %d (%s): %s", r.Index, r.Name, r.Reason))
		}
	}
	if err := write(); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w: %w", ErrCheckFailed, errors.Join(failed...))
	}
	return nil
}
