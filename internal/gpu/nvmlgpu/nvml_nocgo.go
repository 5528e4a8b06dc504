//go:build !cgo

package nvmlgpu

import (
	"fmt"

	"github.com/mlplane/mlplane/internal/gpu"
)

// Open reports that this binary cannot use NVML: go-nvml needs cgo.
func Open() (gpu.Backend, error) {
	return nil, fmt.Errorf("%w: node-agent was built with CGO_ENABLED=0", gpu.ErrNoNVML)
}
