package jobs

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
)

// drivers lists the pool's drivers sorted by job id.
func (m *Manager) drivers() []Driver {
	if m.cfg.Drivers == nil {
		return nil
	}
	ds := m.cfg.Drivers.Drivers()
	sort.Slice(ds, func(i, j int) bool { return ds[i].JobID < ds[j].JobID })
	return ds
}

// resolve finds a job by Ray job id or submission id, in Ray's order: a
// plain driver with that job id, then a submission whose driver has it,
// then a submission id.
func (m *Manager) resolve(ctx context.Context, id string, ds []Driver) (*Record, *Driver, error) {
	for i := range ds {
		if ds[i].SubmissionID == "" && ds[i].JobID == id {
			return nil, &ds[i], nil
		}
	}
	for i := range ds {
		if ds[i].SubmissionID != "" && ds[i].JobID == id {
			if rec, err := m.store.Get(ctx, ds[i].SubmissionID); err == nil {
				return &rec, nil, nil
			}
		}
	}
	rec, err := m.store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: Job %s does not exist", ErrNotFound, id)
	}
	if err != nil {
		return nil, nil, err
	}
	return &rec, nil, nil
}

// Job returns one job's details.
func (m *Manager) Job(ctx context.Context, id string) (Details, error) {
	ds := m.drivers()
	rec, drv, err := m.resolve(ctx, id, ds)
	if err != nil {
		return Details{}, err
	}
	if drv != nil {
		return driverDetails(*drv), nil
	}
	return submissionDetails(*rec, ds), nil
}

// List returns every submission (oldest first), then every plain driver.
func (m *Manager) List(ctx context.Context) ([]Details, error) {
	recs, err := m.store.List(ctx)
	if err != nil {
		return nil, err
	}
	ds := m.drivers()
	out := make([]Details, 0, len(recs)+len(ds))
	for _, r := range recs {
		out = append(out, submissionDetails(r, ds))
	}
	for _, d := range ds {
		if d.SubmissionID == "" {
			out = append(out, driverDetails(d))
		}
	}
	return out, nil
}

func driverDetails(d Driver) Details {
	st := Running
	if !d.Alive {
		st = Succeeded
	}
	pid := ""
	if d.PID != 0 {
		pid = strconv.Itoa(d.PID)
	}
	return Details{
		Account: d.Account, Type: TypeDriver, JobID: strp(d.JobID), Status: st, Entrypoint: d.Entrypoint,
		DriverInfo: &DriverInfo{ID: d.JobID, NodeIPAddress: d.NodeIP, PID: pid},
		StartTime:  msp(d.StartTime), EndTime: msp(d.EndTime), Metadata: orEmpty(d.Metadata), RuntimeEnv: orEmptyAny(d.RuntimeEnv),
	}
}

func submissionDetails(r Record, ds []Driver) Details {
	d := Details{
		Account: r.Account, Type: TypeSubmission, SubmissionID: strp(r.SubmissionID), Status: r.Status, Entrypoint: r.Entrypoint,
		Message: strp(r.message()), StartTime: msp(r.StartTime), EndTime: msp(r.EndTime),
		Metadata: orEmpty(r.Metadata), RuntimeEnv: orEmptyAny(r.RuntimeEnv),
		DriverAgentHTTPAddress: strp(r.DriverAgentHTTPAddress), DriverNodeID: strp(r.DriverNodeID),
		DriverExitCode: r.DriverExitCode,
	}
	if r.ErrorType != "" {
		d.ErrorType = strp(string(r.ErrorType))
	}
	// The submission's latest driver (highest job id) links it to Ray's
	// job table.
	for i := len(ds) - 1; i >= 0; i-- {
		if ds[i].SubmissionID != r.SubmissionID {
			continue
		}
		pid := ds[i].PID
		if pid == 0 {
			pid = r.ClientPID
		}
		if pid == 0 {
			pid = r.DriverPID
		}
		d.JobID = strp(ds[i].JobID)
		d.DriverInfo = &DriverInfo{ID: ds[i].JobID, NodeIPAddress: ds[i].NodeIP, PID: strconv.Itoa(pid)}
		break
	}
	return d
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func orEmptyAny(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}
