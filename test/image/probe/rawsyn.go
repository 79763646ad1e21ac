package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
)

// rawSYN sends hand-made TCP SYN frames straight onto an interface, so tests
// can address packets the way an attacker would (e.g. to 127.0.0.1 via a
// peer's MAC), which the kernel's own stack refuses to send.
func rawSYN(args []string) error {
	fs := flag.NewFlagSet("raw-syn", flag.ContinueOnError)
	iface := fs.String("iface", "", "interface to send on (its MAC is the source MAC)")
	dstMAC := fs.String("dst-mac", "", "destination MAC, e.g. the peer's veth or bridge")
	src := fs.String("src", "", "source IPv4 address")
	dst := fs.String("dst", "", "destination IPv4:PORT")
	count := fs.Int("count", 3, "number of SYN frames")
	if _, err := parse(fs, args, 0); err != nil {
		return err
	}
	f, err := parseSYNFlags(*iface, *dstMAC, *src, *dst, *count)
	if err != nil {
		return err
	}
	ifi, err := net.InterfaceByName(*iface)
	if err != nil {
		return err
	}
	if len(ifi.HardwareAddr) != 6 {
		return usageError{fmt.Sprintf("-iface %s: has no Ethernet address", *iface)}
	}
	copy(f.srcMAC[:], ifi.HardwareAddr)
	f.srcPort = uint16(32768 + rand.IntN(28232)) // the kernel's default ephemeral range
	frames := make([][]byte, *count)
	for i := range frames {
		frames[i] = f.frame(rand.Uint32(), uint16(rand.Uint32()))
	}
	if err := sendFrames(ifi.Index, f.dstMAC, frames); err != nil {
		return fmt.Errorf("-iface %s: %w", *iface, err)
	}
	fmt.Printf("sent %d\n", len(frames))
	return nil
}

// synFrame is one Ethernet + IPv4 + TCP SYN frame's addresses.
type synFrame struct {
	srcMAC, dstMAC [6]byte
	src            netip.Addr
	dst            netip.AddrPort
	srcPort        uint16
}

func parseSYNFlags(iface, dstMAC, src, dst string, count int) (synFrame, error) {
	var f synFrame
	if iface == "" || dstMAC == "" || src == "" || dst == "" {
		return f, usageError{"need -iface IFACE -dst-mac MAC -src SRCIP -dst DSTIP:PORT"}
	}
	mac, err := net.ParseMAC(dstMAC)
	if err != nil || len(mac) != 6 {
		return f, usageError{fmt.Sprintf("-dst-mac %q: want an Ethernet address like 02:42:ac:11:00:02", dstMAC)}
	}
	copy(f.dstMAC[:], mac)
	if f.src, err = netip.ParseAddr(src); err != nil || !f.src.Is4() {
		return f, usageError{fmt.Sprintf("-src %q: want an IPv4 address", src)}
	}
	if f.dst, err = netip.ParseAddrPort(dst); err != nil || !f.dst.Addr().Is4() || f.dst.Port() == 0 {
		return f, usageError{fmt.Sprintf("-dst %q: want IPv4:PORT with a port from 1 to 65535", dst)}
	}
	if count < 1 || count > 1000 {
		return f, usageError{fmt.Sprintf("-count %d: must be 1 to 1000", count)}
	}
	return f, nil
}

const (
	ethLen = 14
	ipLen  = 20
	tcpLen = 20
)

// frame builds the SYN with correct IPv4 and TCP checksums (receivers of a
// veth verify them: nothing offloads a frame written by AF_PACKET).
func (f synFrame) frame(seq uint32, ipID uint16) []byte {
	b := make([]byte, ethLen+ipLen+tcpLen)
	copy(b[0:6], f.dstMAC[:])
	copy(b[6:12], f.srcMAC[:])
	binary.BigEndian.PutUint16(b[12:], 0x0800) // IPv4

	ip := b[ethLen : ethLen+ipLen]
	ip[0] = 0x45 // version 4, 5 words
	binary.BigEndian.PutUint16(ip[2:], ipLen+tcpLen)
	binary.BigEndian.PutUint16(ip[4:], ipID)
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // don't fragment
	ip[8] = 64                                 // TTL
	ip[9] = 6                                  // TCP
	src, dst := f.src.As4(), f.dst.Addr().As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:], checksum(0, ip))

	tcp := b[ethLen+ipLen:]
	binary.BigEndian.PutUint16(tcp[0:], f.srcPort)
	binary.BigEndian.PutUint16(tcp[2:], f.dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = tcpLen / 4 << 4 // data offset
	tcp[13] = 0x02            // SYN
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	binary.BigEndian.PutUint16(tcp[16:], checksum(pseudoHeaderSum(src, dst, len(tcp)), tcp))
	return b
}

// pseudoHeaderSum is the unfolded sum of the IPv4 pseudo-header TCP checksums cover.
func pseudoHeaderSum(src, dst [4]byte, tcpLength int) uint32 {
	var sum uint32
	for _, a := range [][4]byte{src, dst} {
		sum += uint32(a[0])<<8 | uint32(a[1])
		sum += uint32(a[2])<<8 | uint32(a[3])
	}
	return sum + 6 + uint32(tcpLength)
}

// checksum is the Internet checksum (RFC 1071) of data, starting from sum.
func checksum(sum uint32, data []byte) uint16 {
	for i := 0; i+1 < len(data); i += 2 {
		sum += uint32(data[i])<<8 | uint32(data[i+1])
	}
	if len(data)%2 == 1 {
		sum += uint32(data[len(data)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
