// Package fastpath lets the frames a swarm network's bridge forwards between
// its ports (containers and the VXLAN tunnel) skip br_netfilter.
//
// Docker turns net.bridge.bridge-nf-call-iptables on in the host's
// namespace, and it cannot be turned off per bridge, so every IPv4 frame
// any bridge there forwards goes through the iptables hooks (PREROUTING,
// FORWARD, POSTROUTING) as if it were routed. Docker's overlay escapes that
// by keeping its bridge in a namespace of its own. br_netfilter leaves
// frames that carry a VLAN tag alone (unless bridge-nf-filter-vlan-tagged
// is on), so a tc program on the ingress of each port gives every frame a
// priority tag (802.1Q, VLAN 0) as it enters the bridge. Frames for the
// host take the same route as before: the stack treats VLAN 0 as untagged,
// so the bridge device (the gateway) and the containers receive them
// unchanged, and routed traffic meets iptables on the bridge device as
// always. The tunnel's egress removes the tag before encapsulation, so the
// network's MTU and the wire format stay those of plain VXLAN.
//
// Mechanism only: which devices get it is the driver's choice.
package fastpath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Filter names: how Ensure recognises its own filters, also after a restart
// (the programs then are older copies, which behave the same).
const (
	PushName = "ournet-vlan0-push"
	PopName  = "ournet-vlan0-pop"
)

// Offsets in struct __sk_buff (include/uapi/linux/bpf.h), stable ABI.
const (
	skbVLANPresent = 20
	skbVLANTCI     = 24
)

// Path attaches the programs in one network namespace.
type Path struct {
	h         *netlink.Handle
	push, pop *ebpf.Program
}

// Load loads the two programs. It fails without CAP_BPF (or CAP_SYS_ADMIN)
// or without cls_bpf in the kernel; the caller then runs without the fast
// path, which changes nothing but speed.
func Load(h *netlink.Handle) (*Path, error) {
	push, err := load(pushTag())
	if err != nil {
		return nil, err
	}
	pop, err := load(popTag())
	if err != nil {
		push.Close()
		return nil, err
	}
	return &Path{h: h, push: push, pop: pop}, nil
}

func load(ins asm.Instructions) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, Instructions: ins, License: "GPL"})
	if err != nil {
		return nil, fmt.Errorf("load tc program: %w", err)
	}
	return p, nil
}

// pushTag: a frame without a VLAN tag gets VLAN 0; always TC_ACT_OK.
func pushTag() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, skbVLANPresent, asm.Word),
		asm.JNE.Imm(asm.R2, 0, "out"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, int32(htons(unix.ETH_P_8021Q))),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnSkbVlanPush.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

// popTag: a frame tagged VLAN 0 loses the tag; others pass as they are.
func popTag() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R6, skbVLANPresent, asm.Word),
		asm.JEq.Imm(asm.R2, 0, "out"),
		asm.LoadMem(asm.R2, asm.R6, skbVLANTCI, asm.Word),
		asm.And.Imm(asm.R2, 0x0fff),
		asm.JNE.Imm(asm.R2, 0, "out"),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.FnSkbVlanPop.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	}
}

// htons: the helper takes the protocol in network byte order.
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Close releases this process's references; attached filters keep theirs.
func (p *Path) Close() {
	p.push.Close()
	p.pop.Close()
}

// Ensure makes dev's ingress tag frames; with tunnel its egress also
// untags them (the VXLAN port). It reports whether it changed anything.
func (p *Path) Ensure(dev string, tunnel bool) (changed bool, err error) {
	link, err := p.h.LinkByName(dev)
	if err != nil {
		return false, fmt.Errorf("fast path on %s: %w", dev, err)
	}
	changed, err = p.ensure(link, netlink.HANDLE_MIN_INGRESS, PushName, p.push)
	if err != nil || !tunnel {
		return changed, err
	}
	egress, err := p.ensure(link, netlink.HANDLE_MIN_EGRESS, PopName, p.pop)
	return changed || egress, err
}

func (p *Path) ensure(link netlink.Link, parent uint32, name string, prog *ebpf.Program) (bool, error) {
	if filters, err := p.h.FilterList(link, parent); err == nil {
		for _, f := range filters {
			if bpf, ok := f.(*netlink.BpfFilter); ok && bpf.Name == name && bpf.DirectAction {
				return false, nil
			}
		}
	}
	qdisc := &netlink.GenericQdisc{QdiscType: "clsact", QdiscAttrs: netlink.QdiscAttrs{
		LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
	if err := p.h.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("clsact qdisc on %s: %w", link.Attrs().Name, err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: link.Attrs().Index, Parent: parent, Handle: 1,
			Protocol: unix.ETH_P_ALL, Priority: 1},
		Fd: prog.FD(), Name: name, DirectAction: true,
	}
	if err := p.h.FilterReplace(filter); err != nil {
		return false, fmt.Errorf("tc filter %s on %s: %w", name, link.Attrs().Name, err)
	}
	return true, nil
}
