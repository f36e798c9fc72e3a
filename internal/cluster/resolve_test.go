package cluster

import "testing"

// A gossip advertise address may be a host name (a compose service): it
// is resolved to an IP, which is all memberlist takes.
func TestResolveIP(t *testing.T) {
	for _, tc := range []struct {
		host, want string
		err        bool
	}{
		{"127.0.0.1", "127.0.0.1", false},
		{"::1", "::1", false},
		{"localhost", "127.0.0.1", false},
		{"no-such-host.invalid", "", true},
	} {
		got, err := resolveIP(tc.host)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("resolveIP(%q) = %q, %v; want %q (error %v)", tc.host, got, err, tc.want, tc.err)
		}
	}
}
