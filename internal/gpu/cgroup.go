package gpu

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// podUIDPattern finds a pod UID in a cgroup path. The kubelet names a pod's
// cgroup "pod<uid>" with the cgroupfs driver (/kubepods/burstable/pod<uid>/
// <container>) and "kubepods-<qos>-pod<uid_with_underscores>.slice" with the
// systemd driver, on cgroup v1 and v2 alike.
var podUIDPattern = regexp.MustCompile(`(?:^|[/-])pod([0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12})(?:\.slice)?(?:/|$)`)

// PodUIDFromCgroup returns the UID of the pod a process belongs to, given the
// content of its /proc/<pid>/cgroup ("hierarchy-ID:controllers:path" lines;
// v2 has the single line "0::path"). ok is false for a process outside any
// pod.
func PodUIDFromCgroup(content string) (uid string, ok bool) {
	for line := range strings.SplitSeq(content, "\n") {
		// The path is everything after the second colon; it may contain colons.
		_, rest, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		_, path, found := strings.Cut(rest, ":")
		if !found || !strings.Contains(path, "kubepods") {
			continue
		}
		if m := podUIDPattern.FindStringSubmatch(path); m != nil {
			return strings.ToLower(strings.ReplaceAll(m[1], "_", "-")), true
		}
	}
	return "", false
}

// ProcPodUIDs resolves process IDs to pod UIDs through /proc/<pid>/cgroup.
// The agent runs with hostPID so that NVML's PIDs are its own.
type ProcPodUIDs struct {
	// Root is the proc filesystem (default /proc).
	Root string
}

// PodUID returns the pod UID of process pid; ok is false when the process is
// gone or not in a pod.
func (p ProcPodUIDs) PodUID(pid uint32) (string, bool) {
	root := p.Root
	if root == "" {
		root = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(root, strconv.FormatUint(uint64(pid), 10), "cgroup"))
	if err != nil {
		return "", false
	}
	return PodUIDFromCgroup(string(b))
}
