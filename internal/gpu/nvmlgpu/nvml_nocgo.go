//go:build !cgo

package gpu

import "fmt"

// OpenNVML reports that this binary cannot use NVML: go-nvml needs cgo.
func OpenNVML() (Backend, error) {
	return nil, fmt.Errorf("%w: node-agent was built with CGO_ENABLED=0", ErrNoNVML)
}
