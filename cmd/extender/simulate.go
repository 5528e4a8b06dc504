package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mlplane/mlplane/internal/score"
	"github.com/mlplane/mlplane/internal/score/sim"
)

// simulateOptions are the flags of `extender simulate`.
type simulateOptions struct {
	// trace is the trace YAML file (required).
	trace string
	// policy is a PlacementPolicy YAML file (default: the built-in policy).
	policy string
	// output is json or text (default text).
	output string
	// svg, when set, is where the picture of the GPUs goes.
	svg string
}

func runSimulate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o simulateOptions
	fs.StringVar(&o.trace, "trace", "", "trace YAML file (required)")
	fs.StringVar(&o.policy, "policy", "", "PlacementPolicy YAML file (default: built-in policy)")
	fs.StringVar(&o.output, "output", "text", "output format: json or text")
	fs.StringVar(&o.svg, "svg", "", "write an SVG of every GPU's placement to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := simulate(o, stdout); err != nil {
		fmt.Fprintln(stderr, "extender simulate:", err)
		return 1
	}
	return 0
}

func simulate(o simulateOptions, stdout io.Writer) error {
	if o.trace == "" {
		return fmt.Errorf("--trace is required")
	}
	if o.output != "json" && o.output != "text" {
		return fmt.Errorf("--output %q: want json or text", o.output)
	}
	data, err := os.ReadFile(o.trace)
	if err != nil {
		return err
	}
	tr, err := sim.ParseTrace(data)
	if err != nil {
		return err
	}
	policy := score.DefaultPolicy()
	if o.policy != "" {
		pdata, err := os.ReadFile(o.policy)
		if err != nil {
			return err
		}
		if policy, err = score.ParsePolicy(pdata); err != nil {
			return err
		}
	}
	rep, err := sim.Simulate(tr, policy)
	if err != nil {
		return err
	}
	if o.svg != "" {
		f, err := os.Create(o.svg)
		if err != nil {
			return err
		}
		title := fmt.Sprintf("%s: %s/%s", filepath.Base(o.trace), policy.NodeStrategy, policy.GPUStrategy)
		if err := sim.WriteSVG(f, title, &rep.Result); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if o.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return sim.WriteText(stdout, rep)
}
