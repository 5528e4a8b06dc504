// Command podbin is the one binary of the local cluster's real-node images
// (internal/cluster builds it static and packs it into an image in-process):
// without flags it is the pod sandbox's pause process (waits for SIGTERM or
// SIGINT, reaps orphans as PID 1 of the pod); with -http it serves
// "podbin <hostname>" on GET / for tests that reach a pod over the bridge.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	addr := flag.String("http", "", "serve GET / on this address (default: pause)")
	flag.Parse()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	if *addr != "" {
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "podbin %s\n", host)
		})
		go func() { log.Fatal(http.ListenAndServe(*addr, nil)) }()
	}
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for { // reap every exited child
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
