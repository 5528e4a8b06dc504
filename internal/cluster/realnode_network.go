package cluster

import (
	"fmt"
	"net"

	"github.com/google/renameio/v2"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The cluster's address ranges. Nothing of them may leave this host: while a
// real node runs, ServiceCIDR, RealNodeBlock and KWOKPodCIDR are routed to a
// port-less local bridge (realSvcLink) and RealPodCIDR to the pods' bridge,
// and an nftables table drops whatever would still go elsewhere.
const (
	// ServiceCIDR is the Service ClusterIP range (kube-apiserver
	// --service-cluster-ip-range).
	ServiceCIDR = "10.96.0.0/16"
	// KWOKPodCIDR is where KWOK invents its fake pods' IPs.
	KWOKPodCIDR = "10.0.0.0/16"
	// RealNodeBlock holds the real node's pod range and its address.
	RealNodeBlock = "10.244.0.0/16"
	// RealPodCIDR is the real node's pod range, on the bridge realBridge.
	RealPodCIDR = "10.244.0.0/24"
	// RealNodeIP is the real node's address, held by realSvcLink: the
	// kubelet listens there and kube-apiserver binds to it (local only),
	// so that pods reach the API through the kubernetes Service.
	RealNodeIP     = "10.244.255.1"
	realPodGateway = "10.244.0.1"
)

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// routeClusterRanges creates realSvcLink holding RealNodeIP with routes for
// the service, node and KWOK ranges, and realBridge holding the pods'
// gateway, both up, after checking that no host route overlaps them.
func routeClusterRanges() error {
	for _, cidr := range []string{ServiceCIDR, RealNodeBlock, KWOKPodCIDR} {
		n := mustCIDR(cidr)
		rs, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Dst != nil && r.Dst.IP.To4() != nil && (r.Dst.Contains(n.IP) || n.Contains(r.Dst.IP)) {
				if ones, _ := r.Dst.Mask.Size(); ones > 0 {
					return fmt.Errorf("the cluster range %s overlaps the host's route %s: the real node cannot run here", cidr, r.Dst)
				}
			}
		}
	}
	nodeIP := net.ParseIP(RealNodeIP)
	svc := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: realSvcLink}}
	if err := netlink.LinkAdd(svc); err != nil {
		return fmt.Errorf("add link %s: %w", realSvcLink, err)
	}
	if err := netlink.AddrAdd(svc, &netlink.Addr{IPNet: &net.IPNet{IP: nodeIP, Mask: net.CIDRMask(32, 32)}}); err != nil {
		return fmt.Errorf("address %s on %s: %w", RealNodeIP, realSvcLink, err)
	}
	if err := netlink.LinkSetUp(svc); err != nil {
		return err
	}
	for _, cidr := range []string{ServiceCIDR, RealNodeBlock, KWOKPodCIDR} {
		rt := &netlink.Route{LinkIndex: svc.Attrs().Index, Dst: mustCIDR(cidr), Src: nodeIP, Scope: netlink.SCOPE_LINK}
		if err := netlink.RouteAdd(rt); err != nil {
			return fmt.Errorf("route %s dev %s: %w", cidr, realSvcLink, err)
		}
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: realBridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("add link %s: %w", realBridge, err)
	}
	gw := mustCIDR(RealPodCIDR)
	gw.IP = net.ParseIP(realPodGateway).To4()
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: gw}); err != nil {
		return fmt.Errorf("address %s on %s: %w", gw, realBridge, err)
	}
	return netlink.LinkSetUp(br)
}

// ifname is an interface name as nftables compares it (NUL padded).
func ifname(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// addGuardTable adds the inet table guardTable: whatever the pods' bridge
// would forward anywhere but back to the bridge is dropped (pods have no way
// out of this host), and so is any packet to the cluster's ranges that would
// leave through a link other than the cluster's own or loopback.
func addGuardTable() error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: guardTable})
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter})
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(realBridge)},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(realBridge)},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityFilter})
	for _, cidr := range []string{ServiceCIDR, RealNodeBlock, KWOKPodCIDR} {
		n := mustCIDR(cidr)
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
			// ip daddr & mask == net
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: n.Mask, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.IP.To4()},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		}
		for _, l := range []string{realBridge, realSvcLink, "lo"} {
			exprs = append(exprs, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(l)})
		}
		exprs = append(exprs, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table inet %s: %w", guardTable, err)
	}
	return nil
}

// GuardDrops counts the packets the guard table dropped so far: what pods
// tried to send off the host, and what would have left it for the cluster's
// ranges. Dropped packets did not leave; a test logs them to find who sent
// them.
func GuardDrops() (forwarded, leaving uint64, err error) {
	c, err := nftables.New()
	if err != nil {
		return 0, 0, err
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: guardTable}
	for _, chain := range []string{"forward", "postrouting"} {
		rules, err := c.GetRules(t, &nftables.Chain{Name: chain, Table: t})
		if err != nil {
			return 0, 0, fmt.Errorf("nftables table inet %s chain %s: %w", guardTable, chain, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					if chain == "forward" {
						forwarded += ctr.Packets
					} else {
						leaving += ctr.Packets
					}
				}
			}
		}
	}
	return forwarded, leaving, nil
}

func (c *Cluster) writeCNIConfig() error {
	r := c.real
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "mlplane-realnode",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "backend": "nftables"}
  ]
}
`, realBridge, RealPodCIDR, realPodGateway, r.path("cni", "ipam"))
	return renameio.WriteFile(r.path("cni", "net.d", "10-mlplane-realnode.conflist"), []byte(conf), 0o644)
}
