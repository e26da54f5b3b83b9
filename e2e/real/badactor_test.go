package real

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parlance-chat/parlance/protocol"
)

var group = &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: 6789}

// A bad actor on the LAN sends malformed discovery datagrams, a flood of
// forged announces, and junk, escape sequences and an over-long line to a
// client's TCP port, while two good peers chat. The good peers keep
// chatting, stay up, and never print a terminal control character; the
// client keeps a connection across invalid lines and closes it on the
// over-long one.
func TestRealBadActorLocal(t *testing.T) {
	s := newScene(t)
	alice := s.startLocal("alice")
	bob := s.startLocal("bob")
	alice.waitJoined(0, "bob")
	bob.waitJoined(0, "alice")
	chat(alice, bob, "before the attack")
	nw := s.ns.Net()
	ctx := t.Context()

	t.Run("malformed datagrams are ignored", func(t *testing.T) {
		big := `{"type":"announce","nickname":"big","tcp_port":1,"pad":"` + strings.Repeat("x", 9000) + `"}`
		datagrams := [][]byte{
			[]byte(`{"type":"announce","nickname":"trunc`),                             // invalid JSON
			[]byte("{\"type\":\"announce\",\"nickname\":\"\xff\xfe\",\"tcp_port\":5}"), // invalid UTF-8
			[]byte(big), // over 8 KiB
			[]byte(`{"type":"announce","nickname":"\u001b[2J\u001b]0;pwned\u0007","tcp_port":7}`), // escapes: not a valid nickname
			[]byte(`{"type":"announce","nickname":"\u009b31mred","tcp_port":8}`),                  // a C1 CSI
			[]byte(`{"type":"teleport","nickname":"x"}`),                                          // unknown type
			[]byte(`{"type":"announce","nickname":42,"tcp_port":"port"}`),                         // wrong field types
			[]byte(`{"type":"goodbye","nickname":["bob"]}`),
			[]byte(`{"type":"announce","nickname":"eve","tcp_port":70000}`),
			{0x00, 0xff, 0x1b, '[', '2', 'J', 0x9b},
			{},
		}
		c, err := nw.ListenPacket(ctx, "udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, d := range datagrams {
			if _, err := c.WriteTo(d, group); err != nil {
				t.Fatalf("send %.40q: %v", d, err)
			}
		}
		// A valid announce after them, with a nickname that reverses text
		// (allowed), proves they were read and shows it is printed escaped.
		ok := []byte(`{"type":"announce","nickname":"mal\u202eyrolla","tcp_port":9}`)
		if _, err := c.WriteTo(ok, group); err != nil {
			t.Fatal(err)
		}
		alice.WaitLine(0, re(`\* mal\\u202eyrolla joined \(127\.0\.0\.1:9\)`), wait)
		bob.WaitLine(0, re(`\* mal\\u202eyrolla joined \(127\.0\.0\.1:9\)`), wait)
	})

	t.Run("a flood of forged announces from random ports", func(t *testing.T) {
		const socks, each = 30, 100 // 3,000 announces
		for i := range socks {
			c, err := nw.ListenPacket(ctx, "udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			for j := range each {
				// Ports below the ephemeral range: never a good peer's.
				b, _ := protocol.EncodeDatagram(&protocol.Announce{Nickname: "flood", TCPPort: uint16(1024 + i*each + j)})
				if _, err := c.WriteTo(b, group); err != nil {
					t.Fatal(err)
				}
			}
			c.Close()
		}
		// Some reached the peers (a full socket buffer may drop the rest,
		// and the registry refuses entries past its bound); the chat goes
		// on.
		alice.WaitLine(0, re(`\* flood joined \(127\.0\.0\.1:\d+\)`), wait)
		bob.WaitLine(0, re(`\* flood joined \(127\.0\.0\.1:\d+\)`), wait)
		chat(alice, bob, "during the flood")
		chat(bob, alice, "during the flood too")
	})

	t.Run("junk, escapes and an over-long line on the TCP port", func(t *testing.T) {
		addr := fmt.Sprintf("127.0.0.1:%d", alice.port)
		c, err := nw.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		m := alice.Mark()
		junk := "not json\n" +
			"{\"from\":1,\"content\":[],\"timestamp\":\"now\"}\n" +
			"\x00\xff\xfe\x1b[2J\x9b\n" +
			"{\"from\":\"x\"}\n" +
			"\r\n\n"
		// Escapes in the sender's nickname or text are carried, and must be
		// printed escaped; an invalid nickname is marked as such.
		badFrom, _ := protocol.EncodeChatLine(&protocol.ChatMessage{
			From: "\x1b]0;pwned\x07mallory", Content: "hidden", Timestamp: time.Now().Unix(), ID: "bad-0",
		})
		evil, _ := protocol.EncodeChatLine(&protocol.ChatMessage{
			From:      "mal\u202elory",
			Content:   "\x1b[2J\x1b[31mred \u009b1m \u202eevil\r\rhidden",
			Timestamp: time.Now().Unix(), ID: "bad-1",
		})
		if _, err := io.WriteString(c, junk+string(badFrom)+string(evil)); err != nil {
			t.Fatal(err)
		}
		// The invalid lines were skipped, not fatal: the two messages after
		// them on the same connection, and only they, are acknowledged.
		br := bufio.NewReader(c)
		for _, id := range []string{"bad-0", "bad-1"} {
			ack, err := br.ReadString('\n')
			if err != nil || !strings.Contains(ack, `"ack":"`+id+`"`) {
				t.Fatalf("after junk lines: read %q, %v; want the ack of %s", ack, err, id)
			}
		}
		alice.WaitLine(m, re(`\[\d\d:\d\d:\d\d\] \(plain, invalid name\) %s: hidden$`, q(`\x1b]0;pwned\x07mallory`)), wait)
		alice.WaitLine(m, re(`\[\d\d:\d\d:\d\d\] \(plain\) %s: %s$`,
			q(`mal\u202elory`), q(`\x1b[2J\x1b[31mred \u009b1m \u202eevil\r\rhidden`)), wait)

		// A line over 64 KiB: the connection is closed.
		long, err := nw.DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer long.Close()
		long.SetDeadline(time.Now().Add(wait))
		payload := bytes.Repeat([]byte("A"), protocol.MaxLineSize+4096)
		_, werr := long.Write(append(payload, '\n')) // may fail: closed under our feet
		_, rerr := io.Copy(io.Discard, long)         // nil at EOF
		if errors.Is(werr, os.ErrDeadlineExceeded) || errors.Is(rerr, os.ErrDeadlineExceeded) {
			t.Fatalf("over-long line: connection still open after %v (write %v, read %v)", wait, werr, rerr)
		}
	})

	// The good peers chat on, unharmed.
	chat(alice, bob, "after the attack")
	chat(bob, alice, "all fine here")
	alive(t, alice.Process, bob.Process)
	mb := bob.Mark()
	alice.quit()
	bob.waitLeft(mb, "alice")
	bob.quit()
	noTerminalControls(t, alice, bob)
}

// A bad actor on another address (127.0.0.2, so the per-address limits are
// its own) sends the server binary junk, invalid JSON, wrong types, an
// escape-laden nickname, an oversized frame and a rate-limit flood, while
// two internet-mode clients use the server. It gets the documented errors
// and close codes; the clients keep chatting and print no control
// characters.
func TestRealBadActorServer(t *testing.T) {
	s := newScene(t)
	sv := s.startServer(0)
	alice := s.startInternet("alice", sv.url)
	bob := s.startInternet("bob", sv.url)
	alice.waitJoined(0, "bob")
	bob.waitJoined(0, "alice")
	chat(alice, bob, "before the attack")

	bad := s.ns.Net().From("127.0.0.2")
	dial := func(t *testing.T) *websocket.Conn {
		t.Helper()
		d := websocket.Dialer{NetDialContext: bad.DialContext, HandshakeTimeout: wait}
		ws, _, err := d.DialContext(t.Context(), sv.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		ws.SetReadDeadline(time.Now().Add(wait))
		return ws
	}
	write := func(t *testing.T, ws *websocket.Conn, kind int, b []byte) {
		t.Helper()
		if err := ws.WriteMessage(kind, b); err != nil {
			t.Fatal(err)
		}
	}
	// errorReply reads the next message, which must be an error.
	errorReply := func(t *testing.T, ws *websocket.Conn) string {
		t.Helper()
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		m, err := protocol.DecodeServerMessage(b)
		e, ok := m.(*protocol.Error)
		if err != nil || !ok {
			t.Fatalf("got %s (%v), want an error message", b, err)
		}
		return e.Message
	}

	t.Run("junk frames get errors and the connection stays", func(t *testing.T) {
		ws := dial(t)
		for _, tc := range []struct {
			name string
			kind int
			data string
			want string
		}{
			{"binary junk", websocket.BinaryMessage, "\x00\xff\x1b[2J\x9b", protocol.ErrTextInvalidPrefix},
			{"invalid JSON", websocket.TextMessage, `{"type":"register",`, protocol.ErrTextInvalidPrefix},
			{"wrong field types", websocket.TextMessage, `{"type":"register","nickname":7,"local_addr":["x"]}`, protocol.ErrTextInvalidPrefix},
			{"unknown type", websocket.TextMessage, `{"type":"shutdown"}`, protocol.ErrTextInvalidPrefix},
			{"escape sequences in the nickname", websocket.TextMessage, `{"type":"register","nickname":"\u001b[2J\u001b]0;pwned\u0007","local_addr":"0.0.0.0:1"}`, protocol.ErrTextInvalidPrefix},
			{"heartbeat before register", websocket.TextMessage, `{"type":"heartbeat"}`, protocol.ErrTextNotRegistered},
		} {
			write(t, ws, tc.kind, []byte(tc.data))
			if got := errorReply(t, ws); !strings.HasPrefix(got, tc.want) {
				t.Errorf("%s: error %q, want %q...", tc.name, got, tc.want)
			}
		}
		// Still usable: a valid register with a text-reversing (allowed)
		// nickname is accepted, and the good clients show it escaped.
		write(t, ws, websocket.TextMessage, []byte(`{"type":"register","nickname":"mal\u202eyrolla","local_addr":"0.0.0.0:9"}`))
		_, b, err := ws.ReadMessage()
		if m, derr := protocol.DecodeServerMessage(b); err != nil || derr != nil {
			t.Fatalf("register after junk: %s %v %v", b, err, derr)
		} else if _, ok := m.(*protocol.Registered); !ok {
			t.Fatalf("register after junk: %s, want registered", b)
		}
		alice.WaitLine(0, re(`\* mal\\u202eyrolla joined \(127\.0\.0\.2:9\)`), wait)
		bob.WaitLine(0, re(`\* mal\\u202eyrolla joined \(127\.0\.0\.2:9\)`), wait)
	})

	t.Run("an oversized frame gets an error and close 1009", func(t *testing.T) {
		ws := dial(t)
		write(t, ws, websocket.TextMessage, []byte(`{"type":"list_peers","pad":"`+strings.Repeat("x", protocol.MaxClientFrameSize)+`"}`))
		want := protocol.ErrTextInvalidPrefix + fmt.Sprintf("frame exceeds the limit of %d bytes", protocol.MaxClientFrameSize)
		if got := errorReply(t, ws); got != want {
			t.Errorf("error %q, want %q", got, want)
		}
		if _, _, err := ws.ReadMessage(); !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
			t.Errorf("after the error: %v, want close 1009", err)
		}
	})

	t.Run("a flood gets rate limited and close 1008", func(t *testing.T) {
		ws := dial(t)
		frame, _ := protocol.EncodeClientMessage(&protocol.ListPeers{})
		// Twice the burst, as fast as the socket takes it, then read.
		for range 200 {
			if ws.WriteMessage(websocket.TextMessage, frame) != nil {
				break // the server has cut us off
			}
		}
		var limited bool
		var err error
		for {
			var b []byte
			if _, b, err = ws.ReadMessage(); err != nil {
				break
			}
			if m, _ := protocol.DecodeServerMessage(b); m != nil {
				if e, ok := m.(*protocol.Error); ok && e.Message == "Rate limit exceeded" {
					limited = true
				}
			}
		}
		if !limited || !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
			t.Errorf("flood: rate-limit error seen %v, connection ended with %v; want the error and close 1008", limited, err)
		}
	})

	// The clients, on their own address, were not limited and chat on.
	chat(alice, bob, "after the attack")
	chat(bob, alice, "all fine")
	alive(t, alice.Process, bob.Process, sv.Process)
	mb := bob.Mark()
	alice.quit()
	bob.waitLeft(mb, "alice")
	bob.quit()
	noTerminalControls(t, alice, bob)
}
