package bench

import (
	"github.com/prometheus/procfs"
)

// MachineCPU is the machine's CPU time since boot, from /proc/stat's "cpu"
// line: busy (everything but idle, iowait and steal) and total (everything
// but steal), in seconds. Guest time is already counted in user and nice.
type MachineCPU struct {
	Busy, Total float64
}

// ReadMachineCPU reads /proc/stat (Linux), parsed by procfs.
func ReadMachineCPU() (MachineCPU, error) {
	st, err := procfs.NewStat()
	if err != nil {
		return MachineCPU{}, err
	}
	c := st.CPUTotal
	busy := c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ
	return MachineCPU{Busy: busy, Total: busy + c.Idle + c.Iowait}, nil
}

// BusySince is the fraction of CPU time busy between then and m.
func (m MachineCPU) BusySince(then MachineCPU) float64 {
	if m.Total <= then.Total {
		return 0
	}
	return (m.Busy - then.Busy) / (m.Total - then.Total)
}
