package score

import (
	"math"
	"slices"
	"testing"

	"github.com/mlplane/mlplane/internal/api"
)

// victim is a bound pod of priority prio holding memGi GiB on each of gpus.
func victim(key string, prio int32, memGi int64, gpus ...string) VictimCandidate {
	return VictimCandidate{Key: key, Priority: prio, Assignment: Assignment{Node: "n", GPUs: gpus, MemoryMiB: memGi * gi}}
}

// preemptCluster books every candidate on node n (GPUs n-0, n-1, ...).
func preemptCluster(sizesGi []int64, pods []VictimCandidate) *Cluster {
	c := newCluster(map[string][]api.GPU{"n": inv("n", sizesGi...)})
	for _, p := range pods {
		c.Assign(p.Key, p.Assignment)
	}
	return c
}

func TestSelectVictims(t *testing.T) {
	terminating := victim("T", 0, 60, "n-0")
	terminating.Terminating = true
	pdbA := victim("A", 0, 50, "n-0")
	pdbA.ViolatesPDB = true
	early, late := victim("early", 0, 50, "n-0"), victim("late", 0, 50, "n-1")
	early.StartTime, late.StartTime = 100, 200
	outside := inv("n", 80, 80)
	outside[0].OutsideUsedMiB = new(int64(30 * gi))
	for _, tc := range []struct {
		name      string
		sizes     []int64
		inventory []api.GPU // instead of sizes, when set
		pods      []VictimCandidate
		memGi     int64
		count     int
		prio      int32
		ok        bool
		want      []string // victims, most important first
		gpus      []string
		pdb       int
		highest   int32
	}{{
		// The node's total fits (60 of 160 free) but no GPU has 60 GiB:
		// kube-scheduler finds no victim here. One pod goes.
		name: "fragmented", sizes: []int64{80, 80}, memGi: 60, prio: 10,
		pods: []VictimCandidate{victim("A", 0, 50, "n-0"), victim("B", 0, 50, "n-1")},
		ok:   true, want: []string{"A"}, gpus: []string{"n-0"}, highest: 0,
	}, {
		// kube-scheduler, by the total, reprieves the two 50 GiB pods
		// (more important) and evicts both 30 GiB pods, one per GPU:
		// 30+30 GiB freed, and still no GPU with 60. Per GPU, both pods
		// of one GPU go.
		name: "full node, wrong GPU by the total", sizes: []int64{80, 80}, memGi: 60, prio: 10,
		pods: []VictimCandidate{victim("C", 1, 30, "n-0"), victim("D", 2, 50, "n-0"), victim("E", 1, 30, "n-1"), victim("F", 2, 50, "n-1")},
		ok:   true, want: []string{"D", "C"}, gpus: []string{"n-0"}, highest: 2,
	}, {
		name: "lower priority first", sizes: []int64{80, 80}, memGi: 40, prio: 10,
		pods: []VictimCandidate{victim("high", 5, 70, "n-0"), victim("low", 1, 70, "n-1")},
		ok:   true, want: []string{"low"}, gpus: []string{"n-1"}, highest: 1,
	}, {
		name: "fewest victims", sizes: []int64{80, 80}, memGi: 40, prio: 10,
		pods: append(smallPods(10, 7, "n-0"), victim("big", 1, 70, "n-1")),
		ok:   true, want: []string{"big"}, gpus: []string{"n-1"}, highest: 1,
	}, {
		name: "a PodDisruptionBudget is spared when it can be", sizes: []int64{80, 80}, memGi: 60, prio: 10,
		pods: []VictimCandidate{pdbA, victim("B", 0, 50, "n-1")},
		ok:   true, want: []string{"B"}, gpus: []string{"n-1"},
	}, {
		name: "and violated when it cannot", sizes: []int64{80}, memGi: 60, prio: 10,
		pods: []VictimCandidate{pdbA},
		ok:   true, want: []string{"A"}, gpus: []string{"n-0"}, pdb: 1,
	}, {
		name: "the later started goes first", sizes: []int64{80, 80}, memGi: 60, prio: 10,
		pods: []VictimCandidate{early, late},
		ok:   true, want: []string{"late"}, gpus: []string{"n-1"},
	}, {
		name: "equal or higher priority is never a victim", sizes: []int64{80}, memGi: 60, prio: 5,
		pods: []VictimCandidate{victim("same", 5, 50, "n-0")},
	}, {
		name: "a terminating pod counts as gone", sizes: []int64{80}, memGi: 60, prio: 10,
		pods: []VictimCandidate{terminating},
		ok:   true, gpus: []string{"n-0"}, highest: math.MinInt32,
	}, {
		// 30 GiB used outside pods on n-0 is never freed: removing A
		// leaves 50 there.
		name: "memory used outside pods stays", inventory: outside, memGi: 60, prio: 10,
		pods: []VictimCandidate{victim("A", 0, 40, "n-0"), victim("B", 0, 50, "n-1")},
		ok:   true, want: []string{"B"}, gpus: []string{"n-1"},
	}, {
		name: "two GPUs: the empty one and one victim", sizes: []int64{80, 80, 80}, memGi: 50, count: 2, prio: 10,
		pods: []VictimCandidate{victim("A", 1, 40, "n-0"), victim("B", 0, 40, "n-1"), victim("C", 0, 10, "n-2")},
		ok:   true, want: []string{"B"}, gpus: []string{"n-1", "n-2"},
	}, {
		// A holds 40 GiB on each of two GPUs: removing it frees both.
		name: "a victim on two GPUs", sizes: []int64{80, 80}, memGi: 60, count: 2, prio: 10,
		pods: []VictimCandidate{victim("A", 0, 40, "n-0", "n-1")},
		ok:   true, want: []string{"A"}, gpus: []string{"n-0", "n-1"},
	}, {
		name: "no room even with every candidate gone", sizes: []int64{80}, memGi: 90, prio: 10,
		pods: []VictimCandidate{victim("A", 0, 10, "n-0")},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := preemptCluster(tc.sizes, tc.pods)
			if tc.inventory != nil {
				c.SetNode("n", tc.inventory, "")
			}
			count := max(tc.count, 1)
			f := facts(t, c, DefaultPolicy(), Pod{Key: "preemptor", Request: api.GPURequest{MemoryMiB: tc.memGi * gi, Count: count}})
			v, ok := f.SelectVictims("n", c.Node("n"), 0, tc.prio, slices.Clone(tc.pods))
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v (victims %v)", ok, tc.ok, v.Keys)
			}
			if !ok {
				return
			}
			if !slices.Equal(v.Keys, tc.want) {
				t.Errorf("victims = %v, want %v", v.Keys, tc.want)
			}
			gpus := slices.Clone(v.GPUs)
			slices.Sort(gpus)
			if !slices.Equal(gpus, tc.gpus) {
				t.Errorf("GPUs = %v, want %v", v.GPUs, tc.gpus)
			}
			if v.NumPDBViolations != tc.pdb {
				t.Errorf("PDB violations = %d, want %d", v.NumPDBViolations, tc.pdb)
			}
			if len(tc.want) > 0 && tc.highest != 0 && v.HighestPriority != tc.highest {
				t.Errorf("highest priority = %d, want %d", v.HighestPriority, tc.highest)
			}
			if len(tc.want) == 0 && v.HighestPriority != math.MinInt32 {
				t.Errorf("highest priority with no victim = %d", v.HighestPriority)
			}
		})
	}
}

// smallPods are n pods of memGi GiB and priority 1 on gpu.
func smallPods(n int, memGi int64, gpu string) []VictimCandidate {
	var out []VictimCandidate
	for i := range n {
		out = append(out, victim(string(rune('a'+i)), 1, memGi, gpu))
	}
	return out
}

func TestVictimsBetter(t *testing.T) {
	base := Victims{Keys: []string{"a"}, HighestPriority: 1, PrioritySum: 1, MemoryMiB: 10}
	for _, tc := range []struct {
		name string
		v    Victims
	}{
		{"fewer PDB violations", Victims{Keys: []string{"a", "b", "c"}, HighestPriority: 9, PrioritySum: 20, MemoryMiB: 99, NumPDBViolations: -1}},
		{"lower highest priority", Victims{Keys: []string{"a", "b"}, HighestPriority: 0, PrioritySum: 0, MemoryMiB: 99}},
		{"smaller priority sum", Victims{Keys: []string{"a", "b"}, HighestPriority: 1, PrioritySum: 0, MemoryMiB: 99}},
		{"fewer victims", Victims{HighestPriority: 1, PrioritySum: 1, MemoryMiB: 99}},
		{"less memory", Victims{Keys: []string{"b"}, HighestPriority: 1, PrioritySum: 1, MemoryMiB: 5}},
	} {
		if !tc.v.Better(base) || base.Better(tc.v) {
			t.Errorf("%s: want %+v better than %+v", tc.name, tc.v, base)
		}
	}
	if base.Better(base) {
		t.Error("an outcome is better than itself")
	}
}

// TestOutsideMemory: memory used outside pods is kept from bookings even
// while booked pods have not allocated theirs (issue 16 item 3): a 40 GiB
// pod was placed where only 10 GiB was free.
func TestOutsideMemory(t *testing.T) {
	g := inv("a", 80)
	g[0].UsedMiB = 30 * gi // a process outside Kubernetes; the booked pod uses nothing yet
	c := newCluster(map[string][]api.GPU{"a": g})
	c.Assign("p", Assignment{GPUs: []string{"a-0"}, MemoryMiB: 40 * gi})
	// An agent that does not report outside use: 30 used is explained by
	// the 40 booked, so 40 looks free.
	if got := c.Node("a").LargestFreeMiB(); got != 40*gi {
		t.Fatalf("without outsideUsedMiB: free = %d, want %d", got, 40*gi)
	}
	g[0].OutsideUsedMiB = new(int64(30 * gi))
	c.SetNode("a", g, "")
	// 80 - 40 booked - 30 outside = 10.
	if got := c.Node("a").LargestFreeMiB(); got != 10*gi {
		t.Fatalf("with outsideUsedMiB: free = %d, want %d", got, 10*gi)
	}
	f := facts(t, c, DefaultPolicy(), Pod{Key: "new", Request: api.GPURequest{MemoryMiB: 40 * gi, Count: 1}})
	if ok, r := f.Fit("a", c.Node("a"), 0); ok || r.Message != "largest free GPU has 10240 MiB, pod needs 40960 MiB per GPU on 1 GPU" {
		t.Fatalf("Fit = %v %q", ok, r.Message)
	}
}
