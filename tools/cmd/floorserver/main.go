// Command floorserver is the least a bootstrap server can do for
// tools/cmd/loadgen: it answers /healthz, the WebSocket upgrade, a
// register (with a registered frame) and heartbeats (with nothing), and
// nothing else: no JSON decoding, no registry, no limits. It measures
// this machine's floor of CPU per register and per heartbeat, which
// bootstrap-server's figures can be read against when the original
// server is not here to run beside it.
//
// Two I/O models run the same per-connection code (session.feed):
//
//   - -mode go: a goroutine per connection on Go's netpoller, as
//     bootstrap-server and any net.Conn server do;
//   - -mode epoll: one epoll loop of its own over non-blocking sockets
//     it accepts itself, waiting in Go's netpoller on the epoll
//     descriptor; no goroutine per connection (the model of tokio, mio
//     or gnet). With -read-until-eagain it reads each socket until it
//     is empty, as a tokio program (the original server) does: one more
//     read(2) per message, which finds nothing.
//
// Run it as loadgen's server, inside a private network namespace:
//
//	loadgen -server /tmp/floorserver -server-flags "-mode epoll" -n 10000 \
//	  -subscribers 0 -joins 0 -samples 0
//
// It is a measuring tool, not a server: a reply that does not fit the
// socket's send buffer at once closes the connection, and it listens on
// loopback only.
package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"sync/atomic"
	"syscall"
)

func main() {
	fs := flag.NewFlagSet("floorserver", flag.ExitOnError)
	host := fs.String("host", "127.0.0.1", "listen address (loopback)")
	port := fs.Int("port", 8080, "listen port")
	mode := fs.String("mode", "go", "I/O model: go (a goroutine per connection) or epoll (one loop of its own)")
	untilEAGAIN := fs.Bool("read-until-eagain", false, "epoll: read each socket until it is empty (EAGAIN), as tokio and mio programs do, instead of once per report")
	fs.String("log-level", "", "ignored (loadgen passes it)")
	fs.Int("max-peers", 0, "ignored (loadgen passes it)")
	debugAddr := fs.String("debug-addr", "", "serve net/http/pprof here (loadgen -pprof passes it)")
	fs.Parse(os.Args[1:])
	ip := net.ParseIP(*host).To4()
	if ip == nil || !ip.IsLoopback() {
		fmt.Fprintln(os.Stderr, "floorserver: -host must be an IPv4 loopback address")
		os.Exit(2)
	}
	if *debugAddr != "" {
		go func() {
			err := http.ListenAndServe(*debugAddr, nil) // net/http/pprof's handlers
			fmt.Fprintln(os.Stderr, "floorserver: debug:", err)
		}()
	}
	var err error
	switch *mode {
	case "go":
		err = serveGo(fmt.Sprintf("%s:%d", ip, *port))
	case "epoll":
		err = serveEpoll(ip, *port, *untilEAGAIN)
	default:
		err = fmt.Errorf("-mode %q: want go or epoll", *mode)
	}
	fmt.Fprintln(os.Stderr, "floorserver:", err)
	os.Exit(1)
}

var (
	crlf2       = []byte("\r\n\r\n")
	keyHeader   = []byte("\r\nsec-websocket-key:")
	registerTag = []byte(`"type":"register"`)
	healthz     = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
	badRequest  = []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	peerIDs     atomic.Uint64
)

// session is one connection's protocol state, the same under both I/O
// models.
type session struct {
	remoteIP string
	buf      [1024]byte
	n        int
	upgraded bool
}

// feed takes bytes read from the connection and returns what to write
// back and whether to close after writing it.
func (s *session) feed(p []byte, out []byte) ([]byte, bool) {
	if len(p) > len(s.buf)-s.n {
		return out, true
	}
	s.n += copy(s.buf[s.n:], p)
	for {
		if !s.upgraded {
			i := bytes.Index(s.buf[:s.n], crlf2)
			if i < 0 {
				return out, s.n == len(s.buf)
			}
			head := s.buf[:i+2]
			if bytes.HasPrefix(head, []byte("GET /healthz ")) {
				return append(out, healthz...), true
			}
			key := headerValue(head, keyHeader)
			if key == nil {
				return append(out, badRequest...), true
			}
			out = append(out, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
			out = appendAccept(out, key)
			out = append(out, "\r\n\r\n"...)
			s.upgraded = true
			s.n = copy(s.buf[:], s.buf[i+4:s.n])
			continue
		}
		// A client frame: masked, payload under 64 KiB.
		if s.n < 2 {
			return out, false
		}
		op, plen, hl := s.buf[0]&0x0f, int(s.buf[1]&0x7f), 6
		if s.buf[1]&0x80 == 0 || plen == 127 {
			return out, true
		}
		if plen == 126 {
			if s.n < 4 {
				return out, false
			}
			plen, hl = int(s.buf[2])<<8|int(s.buf[3]), 8
		}
		if s.n < hl+plen {
			return out, hl+plen > len(s.buf)
		}
		mask, payload := s.buf[hl-4:hl], s.buf[hl:hl+plen]
		for i := range payload {
			payload[i] ^= mask[i&3]
		}
		switch {
		case op == 8:
			return append(out, 0x88, 0), true
		case op == 1 && bytes.Contains(payload, registerTag):
			out = s.appendRegistered(out)
		}
		s.n = copy(s.buf[:], s.buf[hl+plen:s.n])
	}
}

func (s *session) appendRegistered(out []byte) []byte {
	id := peerIDs.Add(1)
	msg := make([]byte, 0, 128)
	msg = append(msg, `{"type":"registered","peer_id":"00000000-0000-4000-8000-`...)
	msg = fmt.Appendf(msg, "%012x", id)
	msg = append(msg, `","public_addr":"`...)
	msg = append(msg, s.remoteIP...)
	msg = append(msg, `:10000"}`...)
	out = append(out, 0x81, byte(len(msg)))
	return append(out, msg...)
}

// headerValue returns the trimmed value of the header named by name
// ("\r\nname:", lower case), matched without regard to case.
func headerValue(head, name []byte) []byte {
	lower := bytes.ToLower(head)
	i := bytes.Index(lower, name)
	if i < 0 {
		return nil
	}
	v := head[i+len(name):]
	if j := bytes.Index(v, []byte("\r\n")); j >= 0 {
		v = v[:j]
	}
	return bytes.TrimSpace(v)
}

func appendAccept(out, key []byte) []byte {
	h := sha1.New()
	h.Write(key)
	h.Write([]byte("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	var sum [sha1.Size]byte
	return base64.StdEncoding.AppendEncode(out, h.Sum(sum[:0]))
}

func serveGo(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			s := &session{remoteIP: c.RemoteAddr().(*net.TCPAddr).IP.String()}
			var rbuf [512]byte
			var out []byte
			for {
				n, err := c.Read(rbuf[:])
				if err != nil {
					return
				}
				var done bool
				out, done = s.feed(rbuf[:n], out[:0])
				if len(out) > 0 {
					if _, err := c.Write(out); err != nil {
						return
					}
				}
				if done {
					return
				}
			}
		}()
	}
}

func serveEpoll(ip net.IP, port int, untilEAGAIN bool) error {
	lfd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := syscall.SetsockoptInt(lfd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		return err
	}
	sa := &syscall.SockaddrInet4{Port: port}
	copy(sa.Addr[:], ip)
	if err := syscall.Bind(lfd, sa); err != nil {
		return err
	}
	if err := syscall.Listen(lfd, syscall.SOMAXCONN); err != nil {
		return err
	}
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, lfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(lfd)}); err != nil {
		return err
	}
	// The loop waits for ep in Go's netpoller and takes the reports with
	// epoll_wait's timeout 0: a thread blocked in epoll_wait has its P
	// taken back by the runtime's monitor, which then polls every 20 us
	// for a while, at a cost per wake-up comparable to a heartbeat's.
	if err := syscall.SetNonblock(ep, true); err != nil {
		return err
	}
	epf := os.NewFile(uintptr(ep), "epoll")
	rc, err := epf.SyscallConn()
	if err != nil {
		return err
	}
	var (
		sessions = map[int]*session{}
		events   [256]syscall.EpollEvent
		rbuf     [512]byte
		out      []byte
		werr     error
	)
	closeFd := func(fd int) {
		delete(sessions, fd)
		syscall.Close(fd) // also leaves the epoll set
	}
	var handle func(ev syscall.EpollEvent)
	handle = func(ev syscall.EpollEvent) {
		fd := int(ev.Fd)
		if fd == lfd {
			for {
				cfd, rsa, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
				if err != nil {
					break // EAGAIN, or out of descriptors: level-triggered, it comes back
				}
				s := &session{}
				if in4, ok := rsa.(*syscall.SockaddrInet4); ok {
					s.remoteIP = net.IP(in4.Addr[:]).String()
				}
				if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, cfd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(cfd)}); err != nil {
					syscall.Close(cfd)
					continue
				}
				sessions[cfd] = s
			}
			return
		}
		s := sessions[fd]
		if s == nil {
			return
		}
		// One read per event: level-triggered, the rest comes back.
		k, err := syscall.Read(fd, rbuf[:])
		if err == syscall.EAGAIN {
			return
		}
		if k <= 0 {
			closeFd(fd)
			return
		}
		var done bool
		out, done = s.feed(rbuf[:k], out[:0])
		if len(out) > 0 {
			if w, err := syscall.Write(fd, out); err != nil || w < len(out) {
				done = true
			}
		}
		if untilEAGAIN && !done {
			// The read a readiness-based runtime makes before it waits
			// again: here it finds the socket empty (level-triggered, any
			// rest would come back anyway).
			if k, err := syscall.Read(fd, rbuf[:]); err != syscall.EAGAIN {
				if k <= 0 {
					done = true
				} else {
					out, done = s.feed(rbuf[:k], out[:0])
					if len(out) > 0 {
						if w, err := syscall.Write(fd, out); err != nil || w < len(out) {
							done = true
						}
					}
				}
			}
		}
		if done {
			closeFd(fd)
		}
	}
	take := func(uintptr) bool {
		for {
			n, err := syscall.EpollWait(ep, events[:], 0)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			for _, ev := range events[:n] {
				handle(ev)
			}
			if n < len(events) {
				return false
			}
		}
	}
	for werr == nil {
		if err := rc.Read(take); err != nil {
			return err
		}
	}
	return werr
}
