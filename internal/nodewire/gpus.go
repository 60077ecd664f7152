package nodewire

import (
	"maps"
	"time"

	"github.com/gray-cluster/gray/gpu"
	pb "github.com/gray-cluster/gray/proto/nodepb"
)

// GPUStatus is a node's GPU status on the wire.
func GPUStatus(total map[string]float64, labels map[string]string, summary string, devs []gpu.Device, sampled time.Time) *pb.GpuStatus {
	m := &pb.GpuStatus{
		Total: &pb.Resources{Values: maps.Clone(total)}, Labels: maps.Clone(labels), Gpus: summary,
		SampledUnixMs: sampled.UnixMilli(),
	}
	for _, d := range devs {
		m.Devices = append(m.Devices, &pb.GpuDevice{
			Index: int32(d.Index), Uuid: d.UUID, Name: d.Name, AcceleratorType: d.AcceleratorType,
			MemoryTotalBytes: d.MemoryBytes, MemoryUsedBytes: d.MemoryUsedBytes, UtilizationPct: int32(d.UtilizationPct),
			Withdrawn: d.Withdrawn, Reason: d.Reason, PciBusId: d.PCIBusID, MigEnabled: d.MIGEnabled,
		})
	}
	return m
}

// GPUDevices reads the devices of a GPU status.
func GPUDevices(m *pb.GpuStatus) []gpu.Device {
	out := make([]gpu.Device, 0, len(m.GetDevices()))
	for _, d := range m.GetDevices() {
		out = append(out, gpu.Device{
			Index: int(d.Index), UUID: d.Uuid, Name: d.Name, AcceleratorType: d.AcceleratorType,
			MemoryBytes: d.MemoryTotalBytes, MemoryUsedBytes: d.MemoryUsedBytes, UtilizationPct: int(d.UtilizationPct),
			Withdrawn: d.Withdrawn, Reason: d.Reason, PCIBusID: d.PciBusId, MIGEnabled: d.MigEnabled,
		})
	}
	return out
}
