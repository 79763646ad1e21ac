// Command probe is the network tool of the ournet test image: small servers and clients with bounded
// run times, so end-to-end tests and benchmarks get one-line answers instead of parsing busybox output.
//
//	probe serve-tcp :5001                       TCP sink: reads and discards, or echoes with -echo
//	probe throughput HOST:PORT -seconds 3       writes for N seconds, prints "<MB/s> MB/s"
//	probe http-serve :80 -text NAME             answers every request with NAME\n
//	      [-check :81 -drain 3s]                -check: a health-check port (accepts, closes); on SIGTERM
//	                                            it closes at once, :80 serves -drain longer, then exit 0
//	probe get http://IP:PORT/ -timeout 3s       prints the response body
//	probe udp-echo :PORT [-text NAME]           sends every datagram (or NAME) back to its sender
//	probe udp-send IP:PORT MSG -timeout 3s      sends MSG, prints the reply; -sport N: from source port N
//	probe tcp-connect IP:PORT -timeout 3s       prints "connected" if a TCP connection opens
//	probe stream http://HOST:PORT/ -duration 15s one request every -interval for a bounded time; prints
//	                                            sent, failed and the longest gap as JSON (stream.go)
//	probe count http://HOST:PORT/ -n 300        N requests, a new connection (UDP: socket) each, prints
//	      [-parallel 1 -timeout 2s]             {"counts":{BODY:n},"failed":f,"order":[BODY…]} (count.go)
//	probe count udp://HOST:PORT -n 300          sends "x", counts the replies
//	probe raw-syn -iface IFACE -dst-mac MAC -src SRCIP -dst DSTIP:PORT [-count N]
//	                                            sends N (3) hand-made TCP SYN frames via AF_PACKET, prints "sent N"
//
// Exit status: 0 on success, 1 on a network failure, 2 on bad usage.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	commands := map[string]func(args []string) error{
		"serve-tcp":   serveTCP,
		"throughput":  throughput,
		"http-serve":  httpServe,
		"get":         get,
		"udp-echo":    udpEcho,
		"udp-send":    udpSend,
		"tcp-connect": tcpConnect,
		"stream":      stream,
		"count":       count,
		"raw-syn":     rawSYN,
	}
	run, ok := commands[os.Args[1]]
	if !ok {
		usage()
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "probe %s: %v\n", os.Args[1], err)
		var bad usageError
		if errors.As(err, &bad) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: probe serve-tcp|throughput|http-serve|get|udp-echo|udp-send|tcp-connect|stream|count|raw-syn ARGS (see source)")
	os.Exit(2)
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// parse accepts flags before or after the positional arguments ("probe get URL -timeout 3s").
func parse(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	fs.SetOutput(io.Discard)
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(rest) != positional {
		return nil, usageError{fmt.Sprintf("want %d argument(s), got %d: %q", positional, len(rest), rest)}
	}
	return rest, nil
}

func serveTCP(args []string) error {
	fs := flag.NewFlagSet("serve-tcp", flag.ContinueOnError)
	echo := fs.Bool("echo", false, "send received bytes back")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	listener, err := net.Listen("tcp", pos[0])
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", listener.Addr())
	for {
		conn, err := listener.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer conn.Close()
			if *echo {
				io.Copy(conn, conn)
				return
			}
			io.Copy(io.Discard, conn)
		}()
	}
}

func throughput(args []string) error {
	fs := flag.NewFlagSet("throughput", flag.ContinueOnError)
	seconds := fs.Float64("seconds", 3, "how long to send")
	timeout := fs.Duration("timeout", 3*time.Second, "connect timeout")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *seconds <= 0 || *seconds > 600 {
		return usageError{fmt.Sprintf("-seconds %v: must be above 0 and at most 600", *seconds)}
	}
	conn, err := net.DialTimeout("tcp", pos[0], *timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	duration := time.Duration(*seconds * float64(time.Second))
	buf := make([]byte, 128<<10)
	start := time.Now()
	deadline := start.Add(duration)
	conn.SetWriteDeadline(deadline)
	var sent int64
	for time.Now().Before(deadline) {
		n, err := conn.Write(buf)
		sent += int64(n)
		if err != nil {
			var netErr net.Error
			if errors.As(err, &netErr) && netErr.Timeout() {
				break
			}
			return err
		}
	}
	elapsed := time.Since(start).Seconds()
	fmt.Printf("%.1f MB/s\n", float64(sent)/elapsed/1e6)
	return nil
}

func httpServe(args []string) error {
	fs := flag.NewFlagSet("http-serve", flag.ContinueOnError)
	text := fs.String("text", "", "body of every answer (default: the hostname)")
	check := fs.String("check", "", "also listen on this address for health checks (accepts and closes)")
	drain := fs.Duration("drain", 0, "on SIGTERM close the -check listener at once, keep serving this long, then exit")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *drain < 0 || *drain > 10*time.Minute {
		return usageError{fmt.Sprintf("-drain %v: must be from 0 to 10m", *drain)}
	}
	body := *text
	if body == "" {
		body, _ = os.Hostname()
	}
	listener, err := net.Listen("tcp", pos[0])
	if err != nil {
		return err
	}
	var checkListener net.Listener
	if *check != "" {
		if checkListener, err = net.Listen("tcp", *check); err != nil {
			listener.Close()
			return err
		}
	}
	// The container's PID 1 gets no default SIGTERM action: without a handler docker stop waits for SIGKILL.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	return serveHTTPDraining(listener, checkListener, body, *drain, stop)
}

// serveHTTPDraining answers every request on listener with body and accepts (then closes) connections on
// check, until stop fires: then check closes at once, so health checks fail and the balancer sends
// no new connection, while listener keeps serving for drain (what is in flight or still routed here
// finishes), then everything closes and it returns nil.
func serveHTTPDraining(listener, check net.Listener, body string, drain time.Duration, stop <-chan os.Signal) error {
	server := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintln(w, body)
		}),
	}
	if check != nil {
		go func() {
			for {
				conn, err := check.Accept()
				if err != nil {
					return
				}
				conn.Close()
			}
		}()
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	select {
	case err := <-served:
		if check != nil {
			check.Close()
		}
		return err
	case <-stop:
	}
	if check != nil {
		check.Close()
	}
	if drain > 0 {
		time.Sleep(drain)
	}
	server.Close()
	<-served
	return nil
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 3*time.Second, "whole request timeout")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: *timeout}
	resp, err := client.Get(pos[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(os.Stdout, io.LimitReader(resp.Body, 1<<20)); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

func udpEcho(args []string) error {
	fs := flag.NewFlagSet("udp-echo", flag.ContinueOnError)
	text := fs.String("text", "", "reply this text instead of the datagram (tells members apart)")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	conn, err := net.ListenPacket("udp", pos[0])
	if err != nil {
		return err
	}
	fmt.Printf("listening on %s\n", conn.LocalAddr())
	buf := make([]byte, 64<<10)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return err
		}
		if *text != "" {
			conn.WriteTo([]byte(*text), from)
			continue
		}
		conn.WriteTo(buf[:n], from)
	}
}

func udpSend(args []string) error {
	fs := flag.NewFlagSet("udp-send", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the reply")
	sport := fs.Int("sport", 0, "send from this source port (the same flow every run; 0: any)")
	pos, err := parse(fs, args, 2)
	if err != nil {
		return err
	}
	if *sport < 0 || *sport > 65535 {
		return usageError{fmt.Sprintf("-sport %d: must be from 0 to 65535", *sport)}
	}
	var dialer net.Dialer
	if *sport != 0 {
		dialer.LocalAddr = &net.UDPAddr{Port: *sport}
	}
	conn, err := dialer.Dial("udp", pos[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(*timeout))
	if _, err := conn.Write([]byte(pos[1])); err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	fmt.Printf("%s\n", buf[:n])
	return nil
}

func tcpConnect(args []string) error {
	fs := flag.NewFlagSet("tcp-connect", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 3*time.Second, "connect timeout")
	pos, err := parse(fs, args, 1)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", pos[0], *timeout)
	if err != nil {
		return err
	}
	conn.Close()
	fmt.Println("connected")
	return nil
}
