package session

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"testing/synctest"

	"pgregory.net/rapid"
)

// readRawFrame reads one length-prefixed frame, header included.
func readRawFrame(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	f := make([]byte, 2+int(binary.BigEndian.Uint16(hdr[:])))
	copy(f, hdr[:])
	_, err := io.ReadFull(r, f[2:])
	return f, err
}

// mitm is an active attacker between a client and a server. It forwards
// the preamble and the handshake untouched, then holds every transport
// frame the client sends until the client closes, passes the list to
// tamper, sends the server what tamper returns and closes. The server's
// bytes reach the client untouched.
func mitm(t *testing.T, tamper func(frames [][]byte) [][]byte) (clientEnd, serverEnd net.Conn) {
	t.Helper()
	clientEnd, fromClient := net.Pipe()
	toServer, serverEnd := net.Pipe()
	var wg sync.WaitGroup
	wg.Go(func() {
		defer toServer.Close()
		pre := make([]byte, len(Preamble))
		if _, err := io.ReadFull(fromClient, pre); err != nil {
			return
		}
		if _, err := toServer.Write(pre); err != nil {
			return
		}
		for range 2 { // -> e, then -> s, se, payload
			f, err := readRawFrame(fromClient)
			if err != nil {
				return
			}
			if _, err := toServer.Write(f); err != nil {
				return
			}
		}
		var frames [][]byte
		for {
			f, err := readRawFrame(fromClient)
			if err != nil {
				if len(f) > 0 { // a frame cut short stays cut short
					frames = append(frames, f)
				}
				break
			}
			frames = append(frames, f)
		}
		for _, f := range tamper(frames) {
			if _, err := toServer.Write(f); err != nil {
				return
			}
		}
	})
	wg.Go(func() {
		defer fromClient.Close()
		io.Copy(fromClient, toServer)
	})
	t.Cleanup(func() {
		for _, c := range []net.Conn{clientEnd, fromClient, toServer, serverEnd} {
			c.Close()
		}
		wg.Wait()
	})
	return clientEnd, serverEnd
}

// sendThrough runs a session through a mitm: the client writes each
// message with one Write and closes; the server reads until an error. It
// returns what the server read, the error that stopped it, and the frames
// the client sent, as the attacker saw them.
func sendThrough(t *testing.T, client, server *Local, msgs [][]byte, tamper func([][]byte) [][]byte) (got []byte, err error, sent [][]byte) {
	t.Helper()
	cc, sc := mitm(t, func(frames [][]byte) [][]byte {
		sent = frames
		return tamper(cloneFrames(frames))
	})
	cli, srv := connect(t, cc, sc, client, server, nil)
	if cli.err != nil || srv.err != nil {
		t.Fatalf("handshake: client %v, server %v", cli.err, srv.err)
	}
	go func() {
		for _, m := range msgs {
			if _, err := cli.conn.Write(m); err != nil {
				break
			}
		}
		cli.conn.Close()
	}()
	var buf bytes.Buffer
	_, err = io.Copy(&buf, readerOnly{srv.conn})
	if err == nil {
		err = io.EOF // io.Copy hides it
	}
	return buf.Bytes(), err, sent
}

// readerOnly hides the Conn's other methods from io.Copy.
type readerOnly struct{ io.Reader }

func cloneFrames(frames [][]byte) [][]byte {
	out := make([][]byte, len(frames))
	for i, f := range frames {
		out[i] = bytes.Clone(f)
	}
	return out
}

func testMessages(n int) [][]byte {
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = fmt.Appendf(nil, `{"from":"alice","content":"message %d","timestamp":%d}`+"\n", i, 1795739259+i)
	}
	return msgs
}

func TestTamperedStream(t *testing.T) {
	// foreign is frame 2 of an earlier session between the same two nodes.
	var foreign []byte
	tests := []struct {
		name      string
		tamper    func(f [][]byte) [][]byte
		delivered int // messages that arrive before the failure
		want      error
	}{
		{"an untouched stream arrives whole", func(f [][]byte) [][]byte { return f }, 5, io.EOF},
		{"a bit flipped in frame 2's ciphertext", func(f [][]byte) [][]byte { f[2][5] ^= 0x10; return f }, 2, ErrTampered},
		{"a bit flipped in frame 2's tag", func(f [][]byte) [][]byte { f[2][len(f[2])-1] ^= 1; return f }, 2, ErrTampered},
		{"frame 2 shortened by its length field", func(f [][]byte) [][]byte {
			binary.BigEndian.PutUint16(f[2], binary.BigEndian.Uint16(f[2])-1)
			f[2] = f[2][:len(f[2])-1]
			return f
		}, 2, ErrTampered},
		{"a length field below the tag size", func(f [][]byte) [][]byte { f[2] = []byte{0, 15}; return f }, 2, ErrTampered},
		{"frame 2 dropped", func(f [][]byte) [][]byte { return append(f[:2:2], f[3:]...) }, 2, ErrTampered},
		{"frame 1 duplicated", func(f [][]byte) [][]byte { return append(f[:2:2], append([][]byte{f[1]}, f[2:]...)...) }, 2, ErrTampered},
		{"frames 1 and 2 swapped", func(f [][]byte) [][]byte { f[1], f[2] = f[2], f[1]; return f }, 1, ErrTampered},
		{"frame 0 replayed at the end", func(f [][]byte) [][]byte { return append(f, f[0]) }, 5, ErrTampered},
		{"frame 2 of another session in place of frame 2", func(f [][]byte) [][]byte { f[2] = foreign; return f }, 2, ErrTampered},
		{"the last frame cut short", func(f [][]byte) [][]byte { f[4] = f[4][:len(f[4])-3]; return f }, 4, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				alice, bob := testLocal(t, "alice", 1), testLocal(t, "bob", 2)
				msgs := testMessages(5)
				_, _, earlier := sendThrough(t, alice, bob, msgs, func(f [][]byte) [][]byte { return f })
				foreign = earlier[2]
				got, err, _ := sendThrough(t, alice, bob, msgs, tt.tamper)
				if want := bytes.Join(msgs[:tt.delivered], nil); !bytes.Equal(got, want) {
					t.Errorf("the server read\n%s\nwant\n%s", got, want)
				}
				if !errors.Is(err, tt.want) {
					t.Errorf("the server's read failed with %v, want %v", err, tt.want)
				}
			})
		})
	}
}

// An attacker who captured a whole client side (preamble, handshake and
// transport frames) and replays it to the same server gets no session: the
// server's fresh ephemeral key makes the captured third message fail.
func TestReplayedHandshake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		alice, bob := testLocal(t, "alice", 1), testLocal(t, "bob", 2)
		msgs := testMessages(3)

		cc, sc := net.Pipe()
		tap := &tapConn{Conn: cc}
		cli, srv := connect(t, tap, sc, alice, bob, nil)
		if cli.err != nil || srv.err != nil {
			t.Fatalf("handshake: client %v, server %v", cli.err, srv.err)
		}
		go func() {
			for _, m := range msgs {
				cli.conn.Write(m)
			}
			cli.conn.Close()
		}()
		if got, err := io.ReadAll(srv.conn); err != nil || !bytes.Equal(got, bytes.Join(msgs, nil)) {
			t.Fatalf("the original session read %q, %v", got, err)
		}
		captured := tap.written()

		attacker, victim := net.Pipe()
		var wg sync.WaitGroup
		wg.Go(func() { attacker.Write(captured) })
		wg.Go(func() { io.Copy(io.Discard, attacker) })
		defer func() {
			attacker.Close()
			wg.Wait()
		}()
		encrypted, plain, err := Sniff(victim)
		if err != nil || !encrypted {
			t.Fatalf("Sniff: %v, %v", encrypted, err)
		}
		c, err := Server(t.Context(), plain, bob)
		if err == nil {
			got, rerr := io.ReadAll(c)
			t.Fatalf("the replay made a session that read %q, %v", got, rerr)
		}
		if !errors.Is(err, ErrHandshake) || !errors.Is(err, ErrTampered) {
			t.Errorf("the replay failed with %v, want ErrHandshake and ErrTampered", err)
		}
	})
}

// fault is one change an attacker makes to the list of frames.
type fault struct {
	Kind string // drop, dup, swap, flip
	I, J int    // positions, taken modulo the list's length
	Bit  int    // for flip: which bit of frame I, modulo its length
}

func (f fault) apply(frames [][]byte) [][]byte {
	if len(frames) == 0 {
		return frames
	}
	i, j := f.I%len(frames), f.J%len(frames)
	switch f.Kind {
	case "drop":
		return append(frames[:i:i], frames[i+1:]...)
	case "dup":
		return append(frames[:j:j], append([][]byte{frames[i]}, frames[j:]...)...)
	case "swap":
		frames[i], frames[j] = frames[j], frames[i]
	case "flip":
		b := f.Bit % (8 * len(frames[i]))
		frames[i] = bytes.Clone(frames[i])
		frames[i][b/8] ^= 1 << (b % 8)
	}
	return frames
}

// Whatever an attacker does to the frames, the receiver delivers exactly
// the plaintext of the longest untouched prefix of the stream, then fails:
// it never delivers a message twice, altered or out of order.
//
// It runs outside a synctest bubble, which rapid does not support; every
// goroutine of an iteration ends with it.
func TestTamperingNeverDeliversAlteredPlaintext(t *testing.T) {
	alice, bob := testLocal(t, "alice", 1), testLocal(t, "bob", 2)
	rapid.Check(t, func(rt *rapid.T) {
		sizes := rapid.SliceOfN(rapid.OneOf(rapid.IntRange(1, 300), rapid.SampledFrom([]int{maxChunk, maxChunk + 1})), 1, 8).Draw(rt, "sizes")
		var msgs [][]byte
		for i, n := range sizes {
			msgs = append(msgs, bytes.Repeat([]byte{byte('a' + i)}, n))
		}
		faults := rapid.SliceOfN(rapid.Custom(func(rt *rapid.T) fault {
			return fault{
				Kind: rapid.SampledFrom([]string{"drop", "dup", "swap", "flip"}).Draw(rt, "kind"),
				I:    rapid.IntRange(0, 20).Draw(rt, "i"),
				J:    rapid.IntRange(0, 20).Draw(rt, "j"),
				Bit:  rapid.IntRange(0, 1<<20).Draw(rt, "bit"),
			}
		}), 0, 4).Draw(rt, "faults")

		var after [][]byte
		got, err, sent := sendThrough(t, alice, bob, msgs, func(frames [][]byte) [][]byte {
			for _, f := range faults {
				frames = f.apply(frames)
			}
			after = frames
			return frames
		})

		// Each frame's plaintext, in the order sent: messages are
		// written one per Write, split at maxChunk.
		var plain [][]byte
		for _, m := range msgs {
			for len(m) > 0 {
				n := min(len(m), maxChunk)
				plain, m = append(plain, m[:n]), m[n:]
			}
		}
		if len(plain) != len(sent) {
			rt.Fatalf("the client sent %d frames for %d chunks", len(sent), len(plain))
		}
		intact := 0
		for intact < len(after) && intact < len(sent) && bytes.Equal(after[intact], sent[intact]) {
			intact++
		}
		if want := bytes.Join(plain[:intact], nil); !bytes.Equal(got, want) {
			rt.Fatalf("delivered %d bytes, want the %d bytes of the %d intact frames", len(got), len(want), intact)
		}
		switch {
		case intact == len(after):
			if err != io.EOF {
				rt.Fatalf("an untampered (possibly truncated) stream ended with %v, want EOF", err)
			}
		case !errors.Is(err, ErrTampered) && !errors.Is(err, io.ErrUnexpectedEOF):
			rt.Fatalf("a tampered stream ended with %v, want ErrTampered or an unexpected EOF", err)
		}
	})
}
