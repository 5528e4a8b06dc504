package cluster

import (
	"fmt"
	"net"

	"github.com/mlplane/mlplane/internal/cluster/runner"
)

// port returns the port reserved under name, picking a free loopback port
// the first time.
func (c *Cluster) port(name string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.ports[name]; ok {
		return p, nil
	}
	// The kernel may hand out a port again once its probe listener closed;
	// never give two names the same port.
	for {
		p, err := runner.FreePort()
		if err != nil {
			return 0, err
		}
		taken := false
		for _, q := range c.ports {
			taken = taken || q == p
		}
		if !taken {
			c.ports[name] = p
			return p, nil
		}
	}
}

func (c *Cluster) addr(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	host := "127.0.0.1"
	if name == APIServer && c.real != nil {
		// pods reach the API through the kubernetes Service, so it
		// listens on the node's local-only address, not loopback
		host = RealNodeIP
	}
	return fmt.Sprintf("%s:%d", host, c.ports[name])
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
