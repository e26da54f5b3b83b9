package real

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/parlance-chat/parlance/client/session"
	"github.com/parlance-chat/parlance/e2e/internal/proc"
	"github.com/parlance-chat/parlance/e2e/original"
	"github.com/parlance-chat/parlance/protocol"
)

// What goes over loopback between two parlance processes is captured with
// a packet socket on lo: the texts they exchange appear nowhere in it, in
// any form, although their TCP connections carried the session preamble
// and data. The same capture between parlance and an original client (the
// double) does contain the texts, so the check can fail.
func TestRealWireEncrypted(t *testing.T) {
	s := newScene(t)
	ctx := t.Context()

	c := startCapture(t, s.ns)
	alice := s.startLocal("alice")
	bob := s.startLocal("bob")
	alice.waitJoined(0, "bob")
	bob.waitJoined(0, "alice")
	toBob, toAlice := secretText(t), secretText(t)
	chat(alice, bob, toBob) // Delivered, and shown without "(plain)"
	chat(bob, alice, toAlice)
	w := c.stop()
	t.Logf("alice <-> bob: %d frames on lo, TCP payload bytes by port %v (alice %d, bob %d)", w.frames, w.tcpPayload, alice.port, bob.port)

	for _, port := range []int{bob.port, alice.port} {
		if w.tcpPayload[port] == 0 {
			t.Errorf("capture: no TCP payload to or from port %d (a message port); the capture saw %d frames, TCP payload by port %v",
				port, w.frames, w.tcpPayload)
		}
		if !w.preamble[port] {
			t.Errorf("capture: no session preamble %q sent to port %d", session.Preamble, port)
		}
	}
	for _, text := range []string{toBob, toAlice} {
		if found := w.find(text); len(found) > 0 {
			t.Errorf("the text %q crossed the wire between two parlance processes, as %q", text, found)
		}
	}

	// The control: an original client, which speaks plaintext.
	c = startCapture(t, s.ns)
	olivia, err := original.StartPeer(ctx, s.ns.Net(), "olivia")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(olivia.Close)
	alice.waitJoined(0, "olivia")
	eventually(t, wait, "the original peer lists alice", func() bool { return slices.Contains(olivia.Peers(), "alice") })
	toOlivia, fromOlivia := secretText(t), secretText(t)
	alice.sendUnconfirmed("olivia", toOlivia)
	eventually(t, wait, "the original peer receives alice's message", func() bool {
		return slices.ContainsFunc(olivia.Received(), func(m protocol.ChatMessage) bool {
			return m.From == "alice" && m.Content == toOlivia
		})
	})
	m := alice.Mark()
	if err := olivia.Send(ctx, "alice", fromOlivia); err != nil {
		t.Fatal(err)
	}
	alice.waitPlainMessage(m, "olivia", fromOlivia)
	w = c.stop()
	t.Logf("alice <-> olivia: %d frames on lo, TCP payload bytes by port %v", w.frames, w.tcpPayload)
	for _, text := range []string{toOlivia, fromOlivia} {
		if found := w.find(text); !slices.Contains(found, "JSON") {
			t.Errorf("the check cannot fail: the plaintext message %q to or from an original client was not found on the wire in its JSON form (found %q; %d frames, TCP payload by port %v)",
				text, found, w.frames, w.tcpPayload)
		}
	}

	alice.quit()
	bob.quit()
	noTerminalControls(t, alice, bob)
}

// secretText returns a message text no capture could contain by chance:
// 128 random bits, and characters that JSON may escape (<, &, >), so that
// its JSON forms differ from it.
func secretText(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "wire check " + hex.EncodeToString(b) + " <&>"
}

// capture reads every frame on one namespace's lo through an AF_PACKET
// socket, from start until stop.
type capture struct {
	t       *testing.T
	fd      int
	stopped atomic.Bool
	done    chan struct{}
	once    sync.Once
	frames  [][]byte // written by run; read once done is closed
	err     error    // likewise
	w       *wire
}

// startCapture opens a packet socket on ns's lo, in ns, and reads it in a
// goroutine that stop ends. It skips t when packet sockets are not
// permitted, and fails it when ns has an interface other than lo.
func startCapture(t *testing.T, ns *proc.NS) *capture {
	t.Helper()
	var fd int
	var notLo []string
	var sockErr error // opening the packet socket, as opposed to entering ns
	err := ns.Do(func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		lo := -1
		for _, ifi := range ifs {
			if ifi.Name == "lo" {
				lo = ifi.Index
			} else {
				notLo = append(notLo, ifi.Name)
			}
		}
		if len(notLo) > 0 || lo < 0 {
			return nil
		}
		fd, sockErr = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(htons(unix.ETH_P_ALL)))
		if sockErr != nil {
			return fmt.Errorf("socket: %w", sockErr)
		}
		// Room for every frame of a test, so that none is dropped.
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: lo}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind to lo: %w", err)
		}
		return nil
	})
	switch {
	case errors.Is(sockErr, unix.EPERM) || errors.Is(sockErr, unix.EACCES) || errors.Is(sockErr, unix.EAFNOSUPPORT):
		t.Skipf("SKIPPED wire capture: AF_PACKET socket not permitted here (needs CAP_NET_RAW in the namespace): %v", err)
	case err != nil:
		t.Fatalf("capture: %v", err)
	case len(notLo) > 0:
		t.Fatalf("capture: refusing to capture: the scenario's namespace has interfaces other than lo: %q", notLo)
	}
	c := &capture{t: t, fd: fd, done: make(chan struct{})}
	go c.run()
	t.Cleanup(func() { c.stop() })
	return c
}

// run reads frames until stop is asked and the socket holds no more.
func (c *capture) run() {
	defer close(c.done)
	buf := make([]byte, 256<<10) // lo's MTU is 64 KiB; GSO frames stay below this too
	for {
		n, _, err := unix.Recvfrom(c.fd, buf, unix.MSG_TRUNC)
		switch {
		case err == nil && n > len(buf):
			c.err = fmt.Errorf("a %d-byte frame was truncated to %d", n, len(buf))
			return
		case err == nil:
			c.frames = append(c.frames, bytes.Clone(buf[:n]))
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			if c.stopped.Load() {
				return // asked to stop, and everything queued is read
			}
			// Wait for a frame; wake now and then to see a stop.
			fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, 20); err != nil && !errors.Is(err, unix.EINTR) {
				c.err = fmt.Errorf("poll: %w", err)
				return
			}
		default:
			c.err = fmt.Errorf("recvfrom: %w", err)
			return
		}
	}
}

// stop ends the capture once everything already queued on the socket is
// read, and returns what it saw. It fails the test if the kernel dropped a
// frame or the capture failed.
func (c *capture) stop() *wire {
	c.t.Helper()
	c.once.Do(func() {
		c.stopped.Store(true)
		<-c.done
		stats, serr := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		unix.Close(c.fd)
		switch {
		case c.err != nil:
			c.t.Errorf("capture: %v", c.err)
		case serr != nil:
			c.t.Errorf("capture: packet statistics: %v", serr)
		case stats.Drops > 0:
			c.t.Errorf("capture: the kernel dropped %d of %d frames", stats.Drops, stats.Packets)
		}
		c.w = parseWire(c.frames)
	})
	return c.w
}

// wire is what a capture saw.
type wire struct {
	frames     int
	raw        [][]byte     // every frame, whole
	tcpPayload map[int]int  // TCP payload bytes by port (source or destination)
	preamble   map[int]bool // the session preamble opened a segment to this port
}

// parseWire reads the Ethernet, IP and TCP headers of each frame (lo
// frames have a zero Ethernet header).
func parseWire(frames [][]byte) *wire {
	w := &wire{frames: len(frames), raw: frames, tcpPayload: map[int]int{}, preamble: map[int]bool{}}
	for _, f := range frames {
		if len(f) < 14 {
			continue
		}
		var proto byte
		var l4 []byte
		switch ip := f[14:]; binary.BigEndian.Uint16(f[12:14]) {
		case unix.ETH_P_IP:
			if len(ip) < 20 {
				continue
			}
			ihl, total := int(ip[0]&0xf)*4, int(binary.BigEndian.Uint16(ip[2:4]))
			if ihl < 20 || total < ihl || total > len(ip) {
				continue
			}
			proto, l4 = ip[9], ip[ihl:total]
		case unix.ETH_P_IPV6:
			if len(ip) < 40 || 40+int(binary.BigEndian.Uint16(ip[4:6])) > len(ip) {
				continue
			}
			proto, l4 = ip[6], ip[40:40+int(binary.BigEndian.Uint16(ip[4:6]))]
		default:
			continue
		}
		if proto != unix.IPPROTO_TCP || len(l4) < 20 {
			continue
		}
		off := int(l4[12]>>4) * 4
		if off < 20 || off > len(l4) {
			continue
		}
		src, dst := int(binary.BigEndian.Uint16(l4[0:2])), int(binary.BigEndian.Uint16(l4[2:4]))
		payload := l4[off:]
		if len(payload) == 0 {
			continue
		}
		w.tcpPayload[src] += len(payload)
		w.tcpPayload[dst] += len(payload)
		if bytes.HasPrefix(payload, []byte(session.Preamble)) {
			w.preamble[dst] = true
		}
	}
	return w
}

// find returns the forms of text found anywhere in the captured frames:
// "text" itself, "JSON" (as the protocol encodes it), "JSON, HTML-escaped"
// (encoding/json's default), or only its random part ("token").
func (w *wire) find(text string) []string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b) // as the protocol's codec encodes strings
	enc.SetEscapeHTML(false)
	if err := enc.Encode(text); err != nil {
		panic(err)
	}
	plain := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	escaped, _ := json.Marshal(text)
	token := text[len("wire check ") : len("wire check ")+32]
	forms := []struct {
		name   string
		needle []byte
	}{
		{"text", []byte(text)},
		{"JSON", plain},
		{"JSON, HTML-escaped", escaped},
		{"token", []byte(token)},
	}
	var found []string
	for _, f := range forms {
		if slices.ContainsFunc(w.raw, func(frame []byte) bool { return bytes.Contains(frame, f.needle) }) {
			found = append(found, f.name)
		}
	}
	return found
}

// htons converts a 16-bit value to network byte order, as packet sockets
// take their protocol.
func htons(v uint16) uint16 { return v<<8 | v>>8 }
