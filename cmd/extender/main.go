// Command extender is mlplane's kube-scheduler extender: it places pods that
// request mlplane.io/gpu-memory onto specific GPUs (`extender serve`, the
// default), and answers what-if questions offline (`extender simulate`).
// The logic lives in internal/score; this file only wires it.
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "simulate") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "simulate":
		os.Exit(runSimulate(args, os.Stdout, os.Stderr))
	default:
		os.Exit(runServe(args, os.Stderr))
	}
}

// usageError reports a command line error on w; exit status 2.
func usageError(w io.Writer, format string, a ...any) int {
	fmt.Fprintf(w, "extender: "+format+"\n", a...)
	return 2
}
