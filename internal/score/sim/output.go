package sim

import (
	"fmt"
	"html"
	"io"
	"maps"
	"slices"
	"strings"
)

// WriteText writes a summary of the report and, per node, each GPU as a bar.
func WriteText(w io.Writer, rep *Report) error {
	var b strings.Builder
	line := func(name string, r *Result) {
		fmt.Fprintf(&b, "%-10s %4d placed %4d unplaced  GPUs used %4d of %4d (lower bound %d)  memory utilization %5.1f%%  oversubscribed %d\n",
			name, r.PodsPlaced, r.PodsUnplaced, r.GPUsUsed, r.GPUsTotal, r.LowerBoundGPUs, 100*r.MemoryUtilization, r.OversubscribedGPUs)
	}
	name := "policy"
	if p := rep.Policy; p != nil {
		name = p.NodeStrategy + "/" + p.GPUStrategy
	}
	line(name, &rep.Result)
	for _, k := range []string{BaselineWholeGPU, BaselineSpread} {
		if r, ok := rep.Baselines[k]; ok {
			line(k, &r)
		}
	}
	b.WriteString("\n")
	pods := podsByGPU(&rep.Result)
	node := ""
	for _, g := range rep.GPUs {
		if g.Node != node {
			node = g.Node
			fmt.Fprintf(&b, "%s\n", node)
		}
		const width = 40
		fill := 0
		if g.MemoryMiB > 0 {
			fill = int(min(g.AssignedMiB, g.MemoryMiB) * width / g.MemoryMiB)
		}
		fmt.Fprintf(&b, "  %-22s [%s%s] %6d/%6d MiB  %s\n", g.UUID, strings.Repeat("#", fill), strings.Repeat(".", width-fill),
			g.AssignedMiB, g.MemoryMiB, strings.Join(pods[g.UUID], " "))
	}
	for _, u := range rep.Unplaced {
		fmt.Fprintf(&b, "unplaced %s: %s\n", u.Pod, u.Reason)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func podsByGPU(r *Result) map[string][]string {
	out := map[string][]string{}
	for _, p := range r.Placements {
		for _, id := range p.GPUs {
			out[id] = append(out[id], p.Pod)
		}
	}
	return out
}

// palette is colour-blind friendly (Okabe-Ito, then Tol's muted).
var palette = []string{"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#332288", "#117733", "#882255", "#44AA99", "#999933"}

// WriteSVG draws each GPU as a vertical bar, grouped by node, filled from the
// bottom by its pods, one colour per pod group.
func WriteSVG(w io.Writer, title string, r *Result) error {
	const (
		barW, barH, gap, nodeGap = 14, 120, 3, 18
		left, top, perRow        = 20, 70, 8
	)
	type seg struct {
		group, pod string
		mib        int64
	}
	segs := map[string][]seg{}
	groups := map[string]bool{}
	for _, p := range r.Placements {
		for _, id := range p.GPUs {
			segs[id] = append(segs[id], seg{p.group, p.Pod, p.MemoryMiB})
		}
		groups[p.group] = true
	}
	groupNames := slices.Sorted(maps.Keys(groups))
	color := map[string]string{}
	for i, g := range groupNames {
		color[g] = palette[i%len(palette)]
	}

	// Lay nodes out in rows of perRow.
	var nodes []string
	byNode := map[string][]GPUInfo{}
	var maxMiB int64 = 1
	for _, g := range r.GPUs {
		if _, ok := byNode[g.Node]; !ok {
			nodes = append(nodes, g.Node)
		}
		byNode[g.Node] = append(byNode[g.Node], g)
		maxMiB = max(maxMiB, g.MemoryMiB)
	}
	maxGPUs := 1
	for _, n := range nodes {
		maxGPUs = max(maxGPUs, len(byNode[n]))
	}
	nodeW := maxGPUs*(barW+gap) + nodeGap
	rows := (len(nodes) + perRow - 1) / perRow
	cols := min(perRow, len(nodes))
	width := max(left*2+cols*nodeW, 520)
	legendH := 20 * ((len(groupNames) + 3) / 4)
	height := top + rows*(barH+40) + legendH + 20

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%d" y="42">%d pods placed, %d unplaced; %d of %d GPUs used (lower bound %d); memory utilization %.1f%%; oversubscribed GPUs %d</text>`+"\n",
		left, r.PodsPlaced, r.PodsUnplaced, r.GPUsUsed, r.GPUsTotal, r.LowerBoundGPUs, 100*r.MemoryUtilization, r.OversubscribedGPUs)
	for i, n := range nodes {
		x0 := left + (i%perRow)*nodeW
		y0 := top + (i/perRow)*(barH+40)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", x0, y0+barH+14, html.EscapeString(n))
		for j, g := range byNode[n] {
			x := x0 + j*(barW+gap)
			h := int(g.MemoryMiB * barH / maxMiB)
			y := y0 + barH - h
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="#eeeeee" stroke="#888888"><title>%s %s: %d of %d MiB</title></rect>`+"\n",
				x, y, barW, h, html.EscapeString(g.UUID), html.EscapeString(g.Model), g.AssignedMiB, g.MemoryMiB)
			yy := float64(y0 + barH)
			for _, s := range segs[g.UUID] {
				sh := float64(s.mib) * barH / float64(maxMiB)
				fmt.Fprintf(&b, `<rect x="%d" y="%.2f" width="%d" height="%.2f" fill="%s" stroke="white" stroke-width="0.5"><title>%s: %d MiB</title></rect>`+"\n",
					x, yy-sh, barW, sh, color[s.group], html.EscapeString(s.pod), s.mib)
				yy -= sh
			}
		}
	}
	ly := top + rows*(barH+40)
	for i, g := range groupNames {
		x := left + (i%4)*130
		y := ly + (i/4)*20
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n", x, y, color[g], x+16, y+10, html.EscapeString(g))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
