package driver

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/ournet/ournet/driver/ports"
)

const dualStackPort8080 = `[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},` +
	`{"Proto":17,"IP":"","Port":53,"HostIP":"127.0.0.1","HostPort":5353,"HostPortEnd":5353}]`

// dualStackHarness has netA with IPv4 and IPv6 and epA joined with both.
func dualStackHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	req := createRequest(netA, nil)
	req.IPv4Data = []*network.IPAMData{{Pool: "172.30.1.0/24", Gateway: "172.30.1.1/24"}}
	req.IPv6Data = []*network.IPAMData{{Pool: "fd00:30::/64", Gateway: "fd00:30::1/64"}}
	if err := h.d.CreateNetwork(req); err != nil {
		t.Fatal(err)
	}
	h.holds.fw = h.fw
	if _, err := h.d.CreateEndpoint(&network.CreateEndpointRequest{NetworkID: netA, EndpointID: epA,
		Interface: &network.EndpointInterface{Address: "172.30.1.5/24", AddressIPv6: "fd00:30::5/64"}, Options: map[string]interface{}{}}); err != nil {
		t.Fatal(err)
	}
	h.mustJoin(netA, epA)
	return h
}

var epAHolds = []string{"e1e1e1e1e1e1 tcp 0.0.0.0:8080", "e1e1e1e1e1e1 tcp [::]:8080", "e1e1e1e1e1e1 udp 127.0.0.1:5353"}

func TestPublishHoldsPorts(t *testing.T) {
	h := dualStackHarness(t)
	if err := h.program(epA, dualStackPort8080); err != nil {
		t.Fatal(err)
	}
	if got := h.holds.list(); !reflect.DeepEqual(got, epAHolds) {
		t.Errorf("holds after publishing = %v, want %v", got, epAHolds)
	}
}

// Every call that unpublishes releases the holds, and returns only once their
// sockets are closed: Revoke too, since the engine may follow it with another
// driver publishing the same ports (a network connect moving the gateway).
func TestUnpublishReleasesHolds(t *testing.T) {
	revoke := func(h *harness) error {
		return h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: netA, EndpointID: epA})
	}
	leave := func(h *harness) error { return h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epA}) }
	tests := []struct {
		name      string
		unpublish func(h *harness) error
	}{
		{"revoke", revoke},
		{"leave", leave},
		{"revoke then leave", func(h *harness) error {
			if err := revoke(h); err != nil {
				return err
			}
			return leave(h)
		}},
		{"delete endpoint", func(h *harness) error {
			return h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epA})
		}},
		{"delete network", func(h *harness) error { return h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}) }},
		{"publish other ports", func(h *harness) error {
			return h.program(epA, `[{"Proto":6,"Port":80,"HostPort":8081,"HostPortEnd":8081}]`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := dualStackHarness(t)
			// epB on netB keeps its hold through epA's unpublishing.
			h.mustCreateNetwork(netB, 2, nil)
			h.mustJoinedEndpoint(netB, epB, "172.30.2.5/24")
			if err := h.program(epB, `[{"Proto":6,"Port":80,"HostPort":9090,"HostPortEnd":9090}]`); err != nil {
				t.Fatal(err)
			}
			if err := h.program(epA, dualStackPort8080); err != nil {
				t.Fatal(err)
			}
			if err := tt.unpublish(h); err != nil {
				t.Fatal(err)
			}
			if h.holds.stillClosing() {
				t.Error("released sockets may still be closing when the call returned")
			}
			want := []string{"e2e2e2e2e2e2 tcp 0.0.0.0:9090"}
			if tt.name == "publish other ports" {
				want = []string{"e1e1e1e1e1e1 tcp 0.0.0.0:8081", "e1e1e1e1e1e1 tcp [::]:8081", "e2e2e2e2e2e2 tcp 0.0.0.0:9090"}
			}
			if got := h.holds.list(); !reflect.DeepEqual(got, want) {
				t.Errorf("holds = %v, want only %v", got, want)
			}
			if len(h.holds.earlyReleases) > 0 {
				t.Errorf("released while the DNAT still published them: %v", h.holds.earlyReleases)
			}
		})
	}
}

func TestRevokeFailureKeepsHolds(t *testing.T) {
	h := dualStackHarness(t)
	if err := h.program(epA, dualStackPort8080); err != nil {
		t.Fatal(err)
	}
	h.fw.failOnce(errors.New("restore failed"))
	if err := h.d.RevokeExternalConnectivity(&network.RevokeExternalConnectivityRequest{NetworkID: netA, EndpointID: epA}); err == nil {
		t.Fatal("firewall failure not reported")
	}
	if got := h.holds.list(); !reflect.DeepEqual(got, epAHolds) {
		t.Errorf("holds after a failed revoke = %v, want them kept with the live rules: %v", got, epAHolds)
	}
}

// A host process that binds a port between Choose and the hold makes the
// publication fail whole, with nothing installed or saved.
func TestPublishConflictOnReserve(t *testing.T) {
	h := dualStackHarness(t)
	h.holds.bindOnHost("tcp", "[::]:8080")
	_, appliedBefore := h.fw.lastApplied()
	err := h.program(epA, dualStackPort8080)
	var conflict *ports.ConflictError
	if !errors.As(err, &conflict) {
		t.Fatalf("publish over a host process: %v, want a ConflictError", err)
	}
	want := "cannot publish tcp port [::]:8080 (to container port 80): already in use on the host; choose another host port or stop what uses it"
	if err.Error() != want {
		t.Errorf("error\n got %q\nwant %q", err, want)
	}
	if _, applied := h.fw.lastApplied(); applied != appliedBefore || len(h.publishedIn(netA)) != 0 {
		t.Errorf("firewall changed by a failed publish: %d -> %d applies, ports %v", appliedBefore, applied, h.publishedIn(netA))
	}
	if got := h.holds.list(); len(got) != 0 {
		t.Errorf("holds left by a failed publish: %v", got)
	}
	h.restart()
	if ports := h.d.st.Endpoints[epA].Ports; len(ports) != 0 {
		t.Errorf("state saved ports of a failed publish: %+v", ports)
	}
}

func TestPublishFirewallFailureReleasesNewHolds(t *testing.T) {
	h := dualStackHarness(t)
	if err := h.program(epA, `[{"Proto":6,"Port":80,"HostPort":8080,"HostPortEnd":8080}]`); err != nil {
		t.Fatal(err)
	}
	h.fw.failOnce(errors.New("restore failed"))
	if err := h.program(epA, `[{"Proto":6,"Port":80,"HostPort":9090,"HostPortEnd":9090}]`); err == nil {
		t.Fatal("firewall failure not reported")
	}
	want := []string{"e1e1e1e1e1e1 tcp 0.0.0.0:8080", "e1e1e1e1e1e1 tcp [::]:8080"}
	if got := h.holds.list(); !reflect.DeepEqual(got, want) {
		t.Errorf("holds after a failed re-publish = %v, want the previous ones %v", got, want)
	}
}

// The real InUse binds a test socket, which fails on ournet's own hold: an
// endpoint publishing again must not conflict with itself, while another
// endpoint still cannot take the port.
func TestRepublishKeepsOwnHolds(t *testing.T) {
	h := newHarness(t)
	h.chooser.InUse = h.holds.kernelInUse
	h.restart()
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	h.mustJoinedEndpoint(netA, epB, "172.30.1.6/24")
	for i := range 2 {
		if err := h.program(epA, port8080); err != nil {
			t.Fatalf("publish #%d: %v", i+1, err)
		}
	}
	if got, want := h.holds.list(), []string{"e1e1e1e1e1e1 tcp 0.0.0.0:8080"}; !reflect.DeepEqual(got, want) {
		t.Errorf("holds = %v, want %v", got, want)
	}
	err := h.program(epB, port8080)
	if err == nil || err.Error() != "cannot publish tcp port 0.0.0.0:8080 (to container port 80): already published by ournet for 172.30.1.5; choose another host port or stop what uses it" {
		t.Errorf("epB publishing epA's port: %v", err)
	}
	// A port only a host process holds is still in use.
	h.holds.bindOnHost("tcp", "0.0.0.0:9090")
	if err := h.program(epB, `[{"Proto":6,"Port":80,"HostPort":9090,"HostPortEnd":9090}]`); err == nil ||
		err.Error() != "cannot publish tcp port 0.0.0.0:9090 (to container port 80): already in use on the host; choose another host port or stop what uses it" {
		t.Errorf("publishing a host process's port: %v", err)
	}
}

// A fixed host port is checked by its hold alone (one bind per port, not
// two): the host is asked only when ournet picks among ports.
func TestFixedPortsAskTheHostOnlyThroughTheHold(t *testing.T) {
	h := newHarness(t)
	asked := 0
	h.chooser.InUse = func(proto string, ip netip.Addr, ipv6 bool, port uint16) bool {
		asked++
		return h.holds.kernelInUse(proto, ip, ipv6, port)
	}
	h.restart()
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	h.mustJoinedEndpoint(netA, epB, "172.30.1.6/24")
	if err := h.program(epA, `[{"Proto":17,"Port":5000,"HostPort":5000,"HostPortEnd":5000},{"Proto":17,"Port":5001,"HostPort":5001,"HostPortEnd":5001}]`); err != nil {
		t.Fatal(err)
	}
	if got := len(h.holds.list()); asked != 0 || got != 2 {
		t.Errorf("fixed ports: InUse asked %d times, %d holds; want 0 and 2", asked, got)
	}
	h.holds.bindOnHost("tcp", "0.0.0.0:9090")
	if err := h.program(epB, `[{"Proto":6,"Port":80,"HostPort":9090,"HostPortEnd":9091}]`); err != nil {
		t.Fatal(err)
	}
	if got := h.publishedIn(netA); asked == 0 || len(got) != 3 || got[0].Proto != "tcp" || got[0].HostPort != 9091 {
		t.Errorf("range 9090-9091 with 9090 bound on the host: InUse asked %d times, published %+v", asked, got)
	}
}

// After a plugin restart (its sockets closed with it) Reconcile holds again
// every port of the saved state; one a host process took meanwhile keeps
// its DNAT.
func TestReconcileHoldsSavedPorts(t *testing.T) {
	h := dualStackHarness(t)
	if err := h.program(epA, dualStackPort8080); err != nil {
		t.Fatal(err)
	}
	h.holds = newFakeReserver()
	h.holds.bindOnHost("udp", "127.0.0.1:5353")
	h.restart()
	if err := h.d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := epAHolds[:2]
	if got := h.holds.list(); !reflect.DeepEqual(got, want) {
		t.Errorf("holds after Reconcile = %v, want %v", got, want)
	}
	if got := len(h.publishedIn(netA)); got != 3 {
		t.Errorf("%d ports published after Reconcile, want all 3 (a host process on one keeps its DNAT)", got)
	}
	if err := h.d.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := h.holds.list(); !reflect.DeepEqual(got, want) {
		t.Errorf("holds after a second Reconcile = %v, want %v", got, want)
	}
}

func TestRepublishReleasesDroppedHolds(t *testing.T) {
	h := newHarness(t)
	h.mustCreateNetwork(netA, 1, nil)
	h.mustJoinedEndpoint(netA, epA, "172.30.1.5/24")
	if err := h.program(epA, port8080); err != nil {
		t.Fatal(err)
	}
	if err := h.program(epA, `[{"Proto":6,"Port":80,"HostPort":9090,"HostPortEnd":9090}]`); err != nil {
		t.Fatal(err)
	}
	if got, want := h.holds.list(), []string{"e1e1e1e1e1e1 tcp 0.0.0.0:9090"}; !reflect.DeepEqual(got, want) {
		t.Errorf("holds after publishing 9090 instead of 8080 = %v, want %v", got, want)
	}
}

// When removing the DNAT fails, the holds stay until an apply succeeds:
// the state no longer publishes the ports, but the rules may, and a host
// process must not bind a port they still shadow.
func TestHoldsOutliveAFailedUnpublish(t *testing.T) {
	for _, tc := range []struct {
		name      string
		unpublish func(h *harness) error
	}{
		{"leave", func(h *harness) error { return h.d.Leave(&network.LeaveRequest{NetworkID: netA, EndpointID: epA}) }},
		{"delete endpoint", func(h *harness) error {
			return h.d.DeleteEndpoint(&network.DeleteEndpointRequest{NetworkID: netA, EndpointID: epA})
		}},
		{"delete network", func(h *harness) error { return h.d.DeleteNetwork(&network.DeleteNetworkRequest{NetworkID: netA}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := dualStackHarness(t)
			if err := h.program(epA, dualStackPort8080); err != nil {
				t.Fatal(err)
			}
			h.fw.failOnce(errors.New("restore failed"))
			tc.unpublish(h) // the engine ignores these errors; the driver logs them
			if got := h.holds.list(); !reflect.DeepEqual(got, epAHolds) {
				t.Errorf("holds after a failed unpublish = %v, want %v kept", got, epAHolds)
			}
			if len(h.holds.earlyReleases) > 0 {
				t.Errorf("released while the DNAT still published them: %v", h.holds.earlyReleases)
			}
			// The heal loop's next successful apply releases them.
			if _, err := h.d.Heal(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := h.holds.list(); len(got) != 0 {
				t.Errorf("holds after the heal applied the rules = %v, want none", got)
			}
		})
	}
}

// A publish whose apply and rollback both fail keeps every hold (the rules
// may publish either set) until an apply succeeds.
func TestPublishFailedRollbackKeepsBothHolds(t *testing.T) {
	h := dualStackHarness(t)
	if err := h.program(epA, `[{"Proto":6,"Port":80,"HostPort":8080,"HostPortEnd":8080}]`); err != nil {
		t.Fatal(err)
	}
	h.fw.failOnce(errors.New("restore failed"))
	h.fw.failOnce(errors.New("rollback failed too"))
	if err := h.program(epA, `[{"Proto":6,"Port":80,"HostPort":9090,"HostPortEnd":9090}]`); err == nil {
		t.Fatal("firewall failure not reported")
	}
	both := []string{"e1e1e1e1e1e1 tcp 0.0.0.0:8080", "e1e1e1e1e1e1 tcp 0.0.0.0:9090", "e1e1e1e1e1e1 tcp [::]:8080", "e1e1e1e1e1e1 tcp [::]:9090"}
	if got := h.holds.list(); !reflect.DeepEqual(got, both) {
		t.Errorf("holds after a failed publish and rollback = %v, want %v", got, both)
	}
	if _, err := h.d.Heal(context.Background()); err != nil {
		t.Fatal(err)
	}
	previous := []string{"e1e1e1e1e1e1 tcp 0.0.0.0:8080", "e1e1e1e1e1e1 tcp [::]:8080"}
	if got := h.holds.list(); !reflect.DeepEqual(got, previous) {
		t.Errorf("holds after the heal applied the rules = %v, want %v", got, previous)
	}
}
