// Command pause is the pod sandbox's process for a node that cannot pull
// registry.k8s.io/pause: it sleeps until SIGTERM or SIGINT and exits 0. As
// PID 1 of a pod that shares its process namespace it also reaps orphaned
// children, as the upstream pause does. hack/images builds it into the
// image localhost/pause:local (containerd's sandbox_image, see
// docs/install.md).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		// Collect every exited child; SIGCHLDs coalesce.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
