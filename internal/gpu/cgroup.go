package gpu

import (
	"regexp"
	"strings"

	"github.com/prometheus/procfs"
)

// podUIDPattern finds a pod UID in a cgroup path. The kubelet names a pod's
// cgroup "pod<uid>" with the cgroupfs driver (/kubepods/burstable/pod<uid>/
// <container>) and "kubepods-<qos>-pod<uid_with_underscores>.slice" with the
// systemd driver, on cgroup v1 and v2 alike.
var podUIDPattern = regexp.MustCompile(`(?:^|[/-])pod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})(?:\.slice)?(?:/|$)`)

// PodUIDFromCgroups returns the UID of the pod a process belongs to, given
// its control groups (/proc/<pid>/cgroup as procfs parses it: one entry per
// hierarchy on cgroup v1, the single "0::path" on v2). ok is false for a
// process outside any pod.
func PodUIDFromCgroups(cgroups []procfs.Cgroup) (uid string, ok bool) {
	for _, cg := range cgroups {
		if !strings.Contains(cg.Path, "kubepods") {
			continue
		}
		if m := podUIDPattern.FindStringSubmatch(cg.Path); m != nil {
			return strings.ToLower(strings.ReplaceAll(m[1], "_", "-")), true
		}
	}
	return "", false
}

// ProcPodUIDs resolves process IDs to pod UIDs through /proc/<pid>/cgroup,
// read by procfs. The agent runs with hostPID so that NVML's PIDs are its
// own. Make one with NewProcPodUIDs.
type ProcPodUIDs struct {
	fs  procfs.FS
	err error // why the proc filesystem cannot be used; every lookup fails
}

// NewProcPodUIDs resolves through the proc filesystem at root (default
// /proc), opened once here rather than at every lookup.
func NewProcPodUIDs(root string) *ProcPodUIDs {
	if root == "" {
		root = procfs.DefaultMountPoint
	}
	fs, err := procfs.NewFS(root)
	return &ProcPodUIDs{fs: fs, err: err}
}

// PodUID returns the pod UID of process pid; ok is false when the process is
// gone, its cgroup file cannot be read or parsed, or it is not in a pod.
func (p *ProcPodUIDs) PodUID(pid uint32) (string, bool) {
	if p.err != nil {
		return "", false
	}
	proc, err := p.fs.Proc(int(pid))
	if err != nil {
		return "", false
	}
	cgroups, err := proc.Cgroups()
	if err != nil {
		return "", false
	}
	return PodUIDFromCgroups(cgroups)
}
