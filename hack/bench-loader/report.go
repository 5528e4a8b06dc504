package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/prometheus/procfs"
)

// report is the whole run, written as text (markdown) and JSON.
type report struct {
	Started    string   `json:"started"`
	Commit     string   `json:"commit"`
	CPUs       int      `json:"cpus"`
	LoadAvg    string   `json:"loadAverage"`
	Interfaces []string `json:"interfaces"`
	Size       int64    `json:"shardBytes"`
	Shards     int      `json:"shards"`
	Files      int      `json:"files"`
	ModelBytes int64    `json:"modelBytes"`
	Rounds     int      `json:"rounds"`
	TLS        bool     `json:"tls"`
	HubH2      bool     `json:"hubHTTP2"`
	// S3CRC64NVME: the S3 objects carried a full-object CRC64NVME checksum.
	S3CRC64NVME bool              `json:"s3CRC64NVME,omitempty"`
	DestFS      string            `json:"destinationFilesystem"`
	LoaderArgs  []string          `json:"loaderArgs,omitempty"`
	Versions    map[string]string `json:"versions"`
	Runs        []*result         `json:"runs"`
	Failed      []string          `json:"failed,omitempty"`

	Tools           []*tool       `json:"tools"`
	Medians         []*median     `json:"medians"`
	Comparisons     []*comparison `json:"comparisons"`
	MaxLoaderRSSMiB float64       `json:"maxLoaderRSSMiB"`
}

// median is one client's medians over its successful rounds.
type median struct {
	Tool       string  `json:"tool"`
	Path       string  `json:"path"`
	Ours       bool    `json:"ours"`
	N          int     `json:"rounds"`
	MBps       float64 `json:"MBps"`
	WallS      float64 `json:"wallSeconds"`
	CPUS       float64 `json:"cpuSeconds"`
	UserS      float64 `json:"userSeconds"`
	SysS       float64 `json:"sysSeconds"`
	MaxRSSMiB  float64 `json:"maxRSSMiB"`
	ServedMB   float64 `json:"servedMB"`
	Requests   float64 `json:"requests"`
	ServerCPUS float64 `json:"serverCPUSeconds"`
}

// comparison is mlplane's loader against the fastest other client.
type comparison struct {
	Scope   string  `json:"scope"` // "s3", "hub" or "all"
	Ours    string  `json:"ours"`
	OursMB  float64 `json:"oursMBps"`
	Fastest string  `json:"fastestOther"`
	OtherMB float64 `json:"fastestOtherMBps"`
	// Ratio is of the medians; Paired the ratios of each round (ours
	// against the fastest other client of that round), PairedMedian their
	// median.
	Ratio        float64   `json:"ratio"`
	Paired       []float64 `json:"pairedRatios,omitempty"`
	PairedMedian float64   `json:"pairedMedian,omitempty"`
}

func medianOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func (rep *report) ok(phase string) []*result {
	var out []*result
	for _, r := range rep.Runs {
		if r.Phase == phase && r.Err == "" {
			out = append(out, r)
		}
	}
	return out
}

// summarize computes the medians and the comparisons.
func (rep *report) summarize(tools []*tool) {
	rep.Tools = tools
	byTool := map[string][]*result{}
	for _, r := range rep.ok(phaseRound) {
		byTool[r.Tool] = append(byTool[r.Tool], r)
	}
	med := map[string]*median{}
	for _, t := range tools {
		rs := byTool[t.Name]
		m := &median{Tool: t.Name, Path: t.Path, Ours: t.Ours, N: len(rs)}
		pick := func(f func(*result) float64) float64 {
			var xs []float64
			for _, r := range rs {
				xs = append(xs, f(r))
			}
			return medianOf(xs)
		}
		m.MBps = pick(func(r *result) float64 { return r.MBps })
		m.WallS = pick(func(r *result) float64 { return r.WallS })
		m.CPUS = pick(func(r *result) float64 { return r.CPUS })
		m.UserS = pick(func(r *result) float64 { return r.UserS })
		m.SysS = pick(func(r *result) float64 { return r.SysS })
		m.MaxRSSMiB = pick(func(r *result) float64 { return r.MaxRSSMiB })
		m.ServedMB = pick(func(r *result) float64 { return float64(r.Served.Content+r.Served.Other) / 1e6 })
		m.Requests = pick(func(r *result) float64 { return float64(r.Served.Requests) })
		m.ServerCPUS = pick(func(r *result) float64 { return r.ServerCPUS })
		rep.Medians = append(rep.Medians, m)
		med[t.Name] = m
	}
	for _, scope := range []string{pathS3, pathHub, "all"} {
		c := &comparison{Scope: scope}
		var ours, others []*tool
		for _, t := range tools {
			if scope != "all" && t.Path != scope {
				continue
			}
			if med[t.Name].N == 0 {
				continue
			}
			if t.Ours {
				ours = append(ours, t)
			} else {
				others = append(others, t)
			}
		}
		if len(ours) == 0 || len(others) == 0 {
			continue
		}
		for _, t := range ours {
			if m := med[t.Name]; m.MBps > c.OursMB {
				c.Ours, c.OursMB = t.Name, m.MBps
			}
		}
		for _, t := range others {
			if m := med[t.Name]; m.MBps > c.OtherMB {
				c.Fastest, c.OtherMB = t.Name, m.MBps
			}
		}
		if c.OtherMB > 0 {
			c.Ratio = c.OursMB / c.OtherMB
		}
		for round := 1; round <= rep.Rounds; round++ {
			var o, b float64
			for _, r := range rep.ok(phaseRound) {
				if r.Round != round || (scope != "all" && r.Path != scope) {
					continue
				}
				isOurs := false
				for _, t := range ours {
					isOurs = isOurs || t.Name == r.Tool
				}
				isOther := false
				for _, t := range others {
					isOther = isOther || t.Name == r.Tool
				}
				if isOurs && r.MBps > o {
					o = r.MBps
				} else if isOther && r.MBps > b {
					b = r.MBps
				}
			}
			if o > 0 && b > 0 {
				c.Paired = append(c.Paired, o/b)
			}
		}
		c.PairedMedian = medianOf(c.Paired)
		rep.Comparisons = append(rep.Comparisons, c)
	}
	for _, r := range rep.Runs {
		if (r.Tool == "loader-s3" || r.Tool == "loader-hf") && r.Phase != phaseProfile && r.Err == "" && r.MaxRSSMiB > rep.MaxLoaderRSSMiB {
			rep.MaxLoaderRSSMiB = r.MaxRSSMiB
		}
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// WriteText writes the report as markdown.
func (rep *report) WriteText(w io.Writer) error {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	transport := "plain HTTP/1.1"
	if rep.TLS {
		transport = "TLS, S3 HTTP/1.1, hub and CDN HTTP/1.1"
		if rep.HubH2 {
			transport = "TLS, S3 HTTP/1.1, hub and CDN HTTP/2"
		}
	}
	p("## Model loader: %d files, %.2f GiB (%d shards), %d rounds\n\n", rep.Files, float64(rep.ModelBytes)/(1<<30), rep.Shards, rep.Rounds)
	p("Started %s at commit %s; %d CPUs, load average %s at the start; network interfaces up: %s; %s on 127.0.0.1; destinations on %s",
		rep.Started, rep.Commit, rep.CPUs, rep.LoadAvg, strings.Join(rep.Interfaces, ", "), transport, rep.DestFS)
	if rep.S3CRC64NVME {
		p("; S3 objects with a full-object CRC64NVME checksum")
	}
	if len(rep.LoaderArgs) > 0 {
		p("; model-loader %s", strings.Join(rep.LoaderArgs, " "))
	}
	p(".\n")
	var names []string
	for k := range rep.Versions {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		p("%s: %s. ", k, rep.Versions[k])
	}
	p("\n\nMB/s are 10^6 bytes of model per second of wall time; CPU is the client's (rusage user+sys, its children included), RSS its peak (rusage maxrss); served is what the server sent (file bytes and listings), server CPU this process's during the run.\n\n")
	for _, r := range rep.Runs {
		if r.Phase == phaseCeiling {
			p("Ceiling, %s: %.1f MB/s to an in-process reader that discards (16 ranges of 64 MiB), server and reader CPU %.2f s.\n", r.Path, r.MBps, r.ServerCPUS)
		}
	}
	p("\n| client | path | rounds | MB/s | wall s | CPU s (user / sys) | peak RSS MiB | served MB (requests) | server CPU s |\n")
	p("|---|---|---:|---:|---:|---|---:|---|---:|\n")
	for _, m := range rep.Medians {
		name := m.Tool
		if m.Ours {
			name = "**" + name + "**"
		}
		p("| %s | %s | %d | %.1f | %.2f | %.2f (%.2f / %.2f) | %.1f | %.1f (%.0f) | %.2f |\n",
			name, m.Path, m.N, m.MBps, m.WallS, m.CPUS, m.UserS, m.SysS, m.MaxRSSMiB, m.ServedMB, m.Requests, m.ServerCPUS)
	}
	p("\nMedians. Clients:\n\n")
	for _, t := range rep.Tools {
		p("- %s: %s\n", t.Name, t.Label)
	}
	p("\nMB/s per round (the order reverses every other round):\n\n| client |")
	for i := 1; i <= rep.Rounds; i++ {
		p(" %d |", i)
	}
	p("\n|---|")
	for i := 1; i <= rep.Rounds; i++ {
		p("---:|")
	}
	p("\n")
	for _, t := range rep.Tools {
		p("| %s |", t.Name)
		for i := 1; i <= rep.Rounds; i++ {
			cell := " |"
			for _, r := range rep.Runs {
				if r.Phase == phaseRound && r.Tool == t.Name && r.Round == i {
					if r.Err != "" {
						cell = " failed |"
					} else {
						cell = fmt.Sprintf(" %.1f |", r.MBps)
					}
				}
			}
			p("%s", cell)
		}
		p("\n")
	}
	p("\n")
	for _, c := range rep.Comparisons {
		paired := make([]string, len(c.Paired))
		for i, x := range c.Paired {
			paired[i] = fmt.Sprintf("%.2f", x)
		}
		p("- %s: %s %.1f MB/s against the fastest other, %s %.1f MB/s: **%.2fx** (per round %s, median %.2fx); goal ≥ 1.5x: %s\n",
			c.Scope, c.Ours, c.OursMB, c.Fastest, c.OtherMB, c.Ratio, strings.Join(paired, ", "), c.PairedMedian, verdict(c.Ratio >= 1.5))
	}
	if rep.MaxLoaderRSSMiB > 0 {
		p("- the loader's peak RSS, all its runs: %.1f MiB; goal < 256 MiB: %s\n", rep.MaxLoaderRSSMiB, verdict(rep.MaxLoaderRSSMiB < 256))
	}
	var cache []*result
	for _, r := range rep.Runs {
		if r.Phase == phaseCacheCold || r.Phase == phaseCacheWarm {
			cache = append(cache, r)
		}
	}
	if len(cache) > 0 {
		p("\nNode cache (--cache-dir), two loads of the same model into two destinations:\n\n")
		p("| client | load | MB/s | wall s | CPU s | peak RSS MiB | file bytes served | other bytes served (requests) |\n|---|---|---:|---:|---:|---:|---:|---|\n")
		allZero := true
		for _, r := range cache {
			if r.Err != "" {
				p("| %s | %s | failed: %s |||||\n", r.Tool, r.Phase, r.Err)
				allZero = false
				continue
			}
			if r.Phase == phaseCacheWarm && r.Served.Content != 0 {
				allZero = false
			}
			p("| %s | %s | %.1f | %.2f | %.2f | %.1f | %d | %d (%d) |\n", r.Tool, r.Phase, r.MBps, r.WallS, r.CPUS, r.MaxRSSMiB, r.Served.Content, r.Served.Other, r.Served.Requests)
		}
		p("\n- second load moves 0 file bytes over the network (the listing only): %s\n", verdict(allZero))
	}
	if len(rep.Failed) > 0 {
		p("\nFAILED:\n")
		for _, f := range rep.Failed {
			p("- %s\n", f)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// emit prints the report and writes out/loader.{txt,json}.
func (rep *report) emit(out string) error {
	if err := rep.WriteText(os.Stdout); err != nil {
		return err
	}
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "loader.txt"), b.Bytes(), 0o644); err != nil {
		return err
	}
	j, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "loader.json"), append(j, '\n'), 0o644)
}

func gitCommit() string {
	b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// loadAvg is the 1, 5 and 15 minute load averages of /proc/loadavg (read
// by procfs) as "0.52 0.60 0.71", or "unknown".
func loadAvg() string {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return "unknown"
	}
	l, err := fs.LoadAvg()
	if err != nil {
		return "unknown"
	}
	return fmt.Sprintf("%.2f %.2f %.2f", l.Load1, l.Load5, l.Load15)
}

// fsType names the filesystem of dir (the common ones by statfs magic).
func fsType(dir string) string {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil {
		return "unknown"
	}
	switch uint64(st.Type) {
	case 0xef53:
		return "ext4"
	case 0x01021994:
		return "tmpfs"
	case 0x58465342:
		return "xfs"
	case 0x9123683e:
		return "btrfs"
	case 0x794c7630:
		return "overlayfs"
	}
	return fmt.Sprintf("filesystem 0x%x", st.Type)
}

// versions asks each client for its version.
func versions(o options, tools []*tool) map[string]string {
	out := map[string]string{}
	ask := func(name string, argv ...string) {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "LANG=C.UTF-8"}
		b, err := cmd.CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		if err != nil && line == "" {
			line = err.Error()
		}
		out[name] = line
	}
	seen := map[string]bool{}
	for _, t := range tools {
		switch {
		case strings.HasPrefix(t.Name, "rclone") && !seen["rclone"]:
			ask("rclone", o.rclone, "version")
		case strings.HasPrefix(t.Name, "aws") && !seen["aws"]:
			ask("aws", o.aws, "--version")
		case t.Name == "aria2c" && !seen["aria2c"]:
			ask("aria2c", o.a2, "--version")
		default:
			continue
		}
		seen[strings.SplitN(t.Name, "-", 2)[0]] = true
	}
	return out
}
