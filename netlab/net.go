package netlab

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A host is one emulated machine: a network namespace with one interface,
// eth0, whose peer is a port of the lab's switch.
type host struct {
	name string // the role's name: etcd, coordinator, ps0, w3
	ns   string // its namespace
	ip   string // its address, inside the lab only
	port string // the switch's port to it (in the switch's namespace)
}

// network is a lab's hosts and their switch: a bridge in a namespace of
// its own, so that nothing of the lab (addresses, the bridge, its
// firewall) is in the machine's own network namespace.
type network struct {
	prefix, subnet string
	switchNS       string
	hosts          []host
	made           []string // namespaces made, removed by down
}

func newNetwork(prefix, subnet string) *network {
	return &network{prefix: prefix, subnet: subnet, switchNS: prefix + "-sw"}
}

// ip runs ip(8) or tc(8), and returns its output in the error.
func ipCmd(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// up makes the switch.
func (n *network) up(ctx context.Context) error {
	if err := n.addNS(ctx, n.switchNS); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"-n", n.switchNS, "link", "add", "br0", "type", "bridge"},
		{"-n", n.switchNS, "link", "set", "br0", "up"},
	} {
		if err := ipCmd(ctx, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

func (n *network) addNS(ctx context.Context, ns string) error {
	if err := ipCmd(ctx, "ip", "netns", "add", ns); err != nil {
		return err
	}
	n.made = append(n.made, ns)
	return nil
}

// addHost makes host name: a namespace, a veth pair to the switch, an
// address, and each direction of the link shaped to rate bit/s by a token
// bucket (on eth0 what the host sends, on the switch's port what it
// receives).
func (n *network) addHost(ctx context.Context, name string, rate float64) (host, error) {
	i := len(n.hosts) + 1
	h := host{name: name, ns: fmt.Sprintf("%s-h%d", n.prefix, i), ip: fmt.Sprintf("%s.%d.%d", n.subnet, i/250, i%250+1),
		port: fmt.Sprintf("p%d", i)}
	if err := n.addNS(ctx, h.ns); err != nil {
		return h, err
	}
	steps := [][]string{
		{"ip", "-n", n.switchNS, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.ns},
		{"ip", "-n", n.switchNS, "link", "set", h.port, "master", "br0", "up"},
		{"ip", "-n", h.ns, "addr", "add", h.ip + "/16", "dev", "eth0"},
		{"ip", "-n", h.ns, "link", "set", "eth0", "up"},
		{"ip", "-n", h.ns, "link", "set", "lo", "up"},
		append([]string{"tc", "-n", h.ns, "qdisc", "add", "dev", "eth0", "root"}, tbf(rate)...),
		append([]string{"tc", "-n", n.switchNS, "qdisc", "add", "dev", h.port, "root"}, tbf(rate)...),
	}
	for _, s := range steps {
		if err := ipCmd(ctx, s[0], s[1:]...); err != nil {
			return h, err
		}
	}
	n.hosts = append(n.hosts, h)
	return h, nil
}

// tbf is a token bucket of rate bit/s: a burst of 4 ms at the rate (at
// least 128 KiB, so that a segmentation-offload packet of 64 KiB passes)
// and up to 50 ms of queue.
func tbf(rate float64) []string {
	burst := max(int64(rate/8*0.004), 128<<10)
	return []string{"tbf", "rate", strconv.FormatInt(int64(rate), 10) + "bit", "burst", strconv.FormatInt(burst, 10), "latency", "50ms"}
}

// down removes every namespace n made (their veth pairs go with them).
// It runs on a fresh context: it must run after the scenario's has ended.
func (n *network) down() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for i := len(n.made) - 1; i >= 0; i-- {
		if err := removeNS(ctx, n.made[i]); err != nil {
			errs = append(errs, err)
		}
	}
	n.made = nil
	return errors.Join(errs...)
}

// removeNS kills the processes left in namespace ns (a lab's own: its
// roles) and removes it.
func removeNS(ctx context.Context, ns string) error {
	if out, err := exec.CommandContext(ctx, "ip", "netns", "pids", ns).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return ipCmd(ctx, "ip", "netns", "del", ns)
}

// Namespaces lists the network namespaces of the lab prefix names (a
// leftover of a lab that was killed, or none).
func Namespaces(ctx context.Context, prefix string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var ns []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			ns = append(ns, f[0])
		}
	}
	return ns, nil
}

// Clean removes the namespaces of the lab prefix names, with everything
// in them.
func Clean(ctx context.Context, prefix string) error {
	ns, err := Namespaces(ctx, prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range ns {
		if err := removeNS(ctx, n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
