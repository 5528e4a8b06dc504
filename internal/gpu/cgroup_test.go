package gpu

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/procfs"
)

// TestPodUIDFromCgroup: each /proc/<pid>/cgroup, written to a proc tree and
// read through ProcPodUIDs (procfs parses it), names the pod or none.
func TestPodUIDFromCgroup(t *testing.T) {
	const uid = "0b6c1c9a-1111-2222-3333-444455556666"
	for _, tc := range []struct {
		name, content, want string
	}{
		{"v2 systemd burstable",
			"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b6c1c9a_1111_2222_3333_444455556666.slice/cri-containerd-4f1e0c.scope\n", uid},
		{"v2 systemd guaranteed",
			"0::/kubepods.slice/kubepods-pod0b6c1c9a_1111_2222_3333_444455556666.slice/cri-containerd-4f1e0c.scope\n", uid},
		{"v2 systemd besteffort, crio",
			"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0b6c1c9a_1111_2222_3333_444455556666.slice/crio-4f1e0c.scope\n", uid},
		{"v2 cgroupfs",
			"0::/kubepods/burstable/pod0b6c1c9a-1111-2222-3333-444455556666/4f1e0c9d\n", uid},
		{"v1 cgroupfs guaranteed, several hierarchies",
			"12:memory:/kubepods/pod0b6c1c9a-1111-2222-3333-444455556666/4f1e0c9d\n11:cpu,cpuacct:/kubepods/pod0b6c1c9a-1111-2222-3333-444455556666/4f1e0c9d\n1:name=systemd:/user.slice\n", uid},
		{"v1 with the pod in a later line",
			"13:rdma:/\n12:pids:/kubepods/besteffort/pod0b6c1c9a-1111-2222-3333-444455556666/4f1e0c9d\n", uid},
		{"v1 systemd",
			"10:devices:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b6c1c9a_1111_2222_3333_444455556666.slice/docker-4f1e.scope\n", uid},
		{"kind node nested under a docker container",
			"0::/system.slice/docker-abc.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod0b6c1c9a_1111_2222_3333_444455556666.slice/cri-containerd-1.scope\n", uid},
		{"upper-case hex is normalised",
			"0::/kubepods/burstable/pod0B6C1C9A-1111-2222-3333-444455556666/4f1e\n", uid},
		{"pod-level cgroup, no container", "0::/kubepods/burstable/pod0b6c1c9a-1111-2222-3333-444455556666\n", uid},
		{"host process", "0::/system.slice/nvidia-persistenced.service\n", ""},
		{"user session", "0::/user.slice/user-1000.slice/session-3.scope\n", ""},
		{"kubepods QoS slice but no pod", "0::/kubepods.slice/kubepods-burstable.slice\n", ""},
		{"pod-like word outside kubepods", "0::/system.slice/pod0b6c1c9a-1111-2222-3333-444455556666.scope\n", ""},
		{"truncated uid", "0::/kubepods/burstable/pod0b6c1c9a-1111-2222-3333/4f1e\n", ""},
		{"empty", "", ""},
		{"garbage", "not a cgroup file", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.MkdirAll(filepath.Join(root, "7"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "7", "cgroup"), []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			got, ok := NewProcPodUIDs(root).PodUID(7)
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("PodUID() = %q, %v; want %q, %v", got, ok, tc.want, tc.want != "")
			}
		})
	}
}

func TestProcPodUIDs(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "42"), 0o755); err != nil {
		t.Fatal(err)
	}
	content := "0::/kubepods/burstable/pod0b6c1c9a-1111-2222-3333-444455556666/4f1e\n"
	if err := os.WriteFile(filepath.Join(root, "42", "cgroup"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	p := NewProcPodUIDs(root)
	if uid, ok := p.PodUID(42); !ok || uid != "0b6c1c9a-1111-2222-3333-444455556666" {
		t.Errorf("PodUID(42) = %q, %v", uid, ok)
	}
	if uid, ok := p.PodUID(43); ok {
		t.Errorf("PodUID of a process that is gone = %q, want none", uid)
	}
}

func FuzzPodUIDFromCgroups(f *testing.F) {
	f.Add("/kubepods/burstable/pod0b6c1c9a-1111-2222-3333-444455556666/4f1e")
	f.Add("/kubepods.slice/kubepods-pod0b6c1c9a_1111_2222_3333_444455556666.slice/x")
	f.Fuzz(func(t *testing.T, path string) {
		uid, ok := PodUIDFromCgroups([]procfs.Cgroup{{Path: path}})
		if ok != (uid != "") || (ok && len(uid) != 36) {
			t.Errorf("PodUIDFromCgroups(%q) = %q, %v", path, uid, ok)
		}
	})
}
