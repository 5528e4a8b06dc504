// Command podbin is the one binary of the local cluster's real-node images
// (internal/cluster builds it static and packs it into an image in-process):
// without flags it is the pod sandbox's pause process (waits for SIGTERM or
// SIGINT, reaps orphans as PID 1 of the pod); with -http it serves
// "podbin <hostname>" on GET /, and on GET /get?url=U fetches U from inside
// the pod (an address of the cluster's 10.0.0.0/8 ranges only) and answers
// with its status and body, so that tests reach Services from a pod.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("http", "", "serve GET / and GET /get on this address (default: pause)")
	flag.Parse()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	if *addr != "" {
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "podbin %s\n", host)
		})
		http.HandleFunc("/get", get)
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

var clusterRanges = &net.IPNet{IP: net.IPv4(10, 0, 0, 0), Mask: net.CIDRMask(8, 32)}

// get fetches the url parameter, a plain IP address of the cluster's ranges
// (no DNS in these pods), without verifying TLS.
func get(w http.ResponseWriter, r *http.Request) {
	u, err := url.Parse(r.URL.Query().Get("url"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		http.Error(w, "want ?url=http(s)://10.x.y.z[:port]/path", http.StatusBadRequest)
		return
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !clusterRanges.Contains(ip) {
		http.Error(w, "only addresses of 10.0.0.0/8", http.StatusBadRequest)
		return
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // test pod, cluster addresses only
	}}
	resp, err := client.Get(u.String())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Fprintf(w, "%d %s", resp.StatusCode, b)
}
