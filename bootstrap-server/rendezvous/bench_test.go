package rendezvous

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/protocol"
)

// The server's own work per register and per heartbeat frame (issue 13):
// decoding, the registry, metrics and encoding the answer, on one
// connection, without sockets. The answers are queued, not written (a
// writer is marked as running and the queue emptied after each frame).
// With sockets, see tools/cmd/loadgen and BENCHMARKS.md.

// benchConn returns a connection of s with no socket.
func benchConn(b *testing.B, s *Server) *conn {
	b.Helper()
	c := &conn{s: s, ip: "192.0.2.10", port: "50000", ipst: &ipState{}, fc: &frameConn{}}
	c.writing = true // answers stay queued: dropQueued empties them
	c.touch()
	return c
}

func dropQueued(c *conn) {
	c.mu.Lock()
	clear(c.queue)
	c.queue, c.queued = c.queue[:0], 0
	c.mu.Unlock()
}

func benchServer(b *testing.B) *Server {
	b.Helper()
	s, err := NewServer(Config{Rand: rand.NewChaCha8([32]byte{1}), MsgRatePerIP: -1, MaxPeers: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkRegister: an original client's register, on a connection that
// registered before (so each one also removes the previous registration),
// with 10,000 other peers registered. "canonical" is the frame as the
// original client and loadgen send it.
//
// "signed" is the same register signed with an identity key (checked:
// an Ed25519 verification), which takes the general decoder.
func BenchmarkRegister(b *testing.B) {
	signed, err := protocol.EncodeClientMessage(signedRegister("load42", 10042, identity(1), time.Now()))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct{ name, frame string }{
		{"canonical", `{"type":"register","nickname":"load42","local_addr":"0.0.0.0:10042"}`},
		// Not the canonical layout (a space): the general decoder.
		{"general", `{"type": "register","nickname":"load42","local_addr":"0.0.0.0:10042"}`},
		{"signed", string(signed)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := benchServer(b)
			for range 10000 {
				other := benchConn(b, s)
				s.process(other, []byte(bc.frame))
			}
			c := benchConn(b, s)
			frame := []byte(bc.frame)
			b.ReportAllocs()
			for b.Loop() {
				s.process(c, frame)
				dropQueued(c)
			}
			if c.peer == nil {
				b.Fatal("not registered")
			}
		})
	}
}

// BenchmarkHeartbeat: a registered client's heartbeat, one second after
// the previous one (so its list entry's last_seen changes each time),
// with 10,000 peers registered. "reader" is a heartbeat read by a reader
// (decode and handle), "waiting" one the waiting goroutine took off the
// socket itself (fastHeartbeat: handle only).
func BenchmarkHeartbeat(b *testing.B) {
	frame := []byte(heartbeatJSON)
	for _, path := range []string{"reader", "general", "waiting"} {
		b.Run(path, func(b *testing.B) {
			s := benchServer(b)
			for range 10000 {
				s.process(benchConn(b, s), []byte(`{"type":"register","nickname":"load42","local_addr":"0.0.0.0:10042"}`))
			}
			c := benchConn(b, s)
			s.process(c, []byte(`{"type":"register","nickname":"me","local_addr":"0.0.0.0:1"}`))
			dropQueued(c)
			general := []byte(`{"type": "heartbeat"}`) // not canonical: the general decoder
			b.ReportAllocs()
			for b.Loop() {
				c.peer.info.LastSeen -= 1 // as if the previous heartbeat were a second ago
				switch path {
				case "reader":
					s.process(c, frame)
				case "general":
					s.process(c, general)
				case "waiting":
					benchFastHeartbeat(s, c)
				}
			}
			if c.peer == nil || time.Since(time.Unix(c.peer.info.LastSeen, 0)) > time.Minute {
				b.Fatal("heartbeat not handled")
			}
		})
	}
}
