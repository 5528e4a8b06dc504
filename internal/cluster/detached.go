package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/google/renameio/v2"

	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// State is what a detached cluster leaves in <Dir>/state.json so that Down
// can stop it from another process.
type State struct {
	Kubeconfig string         `json:"kubeconfig"`
	Processes  []StateProcess `json:"processes"`
}

// StateProcess is one detached process.
type StateProcess struct {
	Name   string `json:"name"`
	PID    int    `json:"pid"`
	Binary string `json:"binary"`
}

// StateFile is where SaveState writes in a cluster directory.
func StateFile(dir string) string { return filepath.Join(dir, "state.json") }

// SaveState records the running processes in StateFile(Dir) and adds
// extra (helpers such as a lease publisher started by the caller).
func (c *Cluster) SaveState(extra ...StateProcess) error {
	st := State{Kubeconfig: c.Kubeconfig()}
	for _, name := range c.Components() {
		comp, _ := c.component(name)
		if pid := comp.PID(); pid != 0 {
			st.Processes = append(st.Processes, StateProcess{Name: name, PID: pid, Binary: comp.Path})
		}
	}
	st.Processes = append(st.Processes, extra...)
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return renameio.WriteFile(StateFile(c.dir), b, 0o644)
}

// Down stops the detached cluster recorded in dir (reverse start order) and
// removes its state file. It only signals pids that still run the recorded
// binary. It returns the names of what it stopped.
func Down(dir string) ([]string, error) {
	b, err := os.ReadFile(StateFile(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", StateFile(dir), err)
	}
	var stopped []string
	for i := len(st.Processes) - 1; i >= 0; i-- {
		p := st.Processes[i]
		if runner.KillGroup(p.PID, p.Binary, 10*time.Second) {
			stopped = append(stopped, p.Name)
		}
	}
	// A real node's host changes, if a crashed run left them.
	return stopped, errors.Join(os.Remove(StateFile(dir)), CleanupRealNode("", nil))
}
