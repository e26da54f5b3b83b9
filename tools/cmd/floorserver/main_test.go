package main

import (
	"bytes"
	"strings"
	"testing"
)

func masked(payload string) []byte {
	mask := []byte{1, 2, 3, 4}
	b := []byte{0x81, 0x80 | byte(len(payload))}
	b = append(b, mask...)
	for i := range len(payload) {
		b = append(b, payload[i]^mask[i%4])
	}
	return b
}

// The session answers as loadgen expects, whatever the pieces its input
// comes in.
func TestSessionFeed(t *testing.T) {
	in := []byte("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	in = append(in, masked(`{"type":"register","nickname":"a","local_addr":"0.0.0.0:1"}`)...)
	in = append(in, masked(`{"type":"heartbeat"}`)...)
	for _, step := range []int{1, 7, len(in)} {
		s := &session{remoteIP: "127.0.0.9"}
		var out []byte
		for i := 0; i < len(in); i += step {
			var done bool
			out, done = s.feed(in[i:min(i+step, len(in))], out)
			if done {
				t.Fatalf("step %d: closed at byte %d", step, i)
			}
		}
		// RFC 6455 section 1.3's example key and answer.
		head, frames, ok := bytes.Cut(out, []byte("\r\n\r\n"))
		if !ok || !strings.HasPrefix(string(head), "HTTP/1.1 101 ") ||
			!strings.Contains(string(head), "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") {
			t.Fatalf("step %d: answer %q", step, head)
		}
		if len(frames) < 2 || frames[0] != 0x81 || int(frames[1]) != len(frames)-2 ||
			!bytes.Contains(frames, []byte(`"type":"registered"`)) || !bytes.Contains(frames, []byte(`"127.0.0.9:10000"`)) {
			t.Fatalf("step %d: want one registered frame and nothing for the heartbeat, got %q", step, frames)
		}
	}
}

func TestSessionFeedRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"healthz":       "GET /healthz HTTP/1.1\r\n\r\n",
		"no key":        "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
		"head too long": "GET / HTTP/1.1\r\n" + strings.Repeat("X: y\r\n", 300),
	} {
		s := &session{}
		out, done := s.feed([]byte(in), nil)
		if !done {
			t.Errorf("%s: not closed (answer %q)", name, out)
		}
	}
	s := &session{}
	s.feed([]byte("GET / HTTP/1.1\r\nSec-WebSocket-Key: k\r\n\r\n"), nil)
	if _, done := s.feed([]byte{0x81, 0x05, 'h', 'e', 'l', 'l', 'o'}, nil); !done {
		t.Error("an unmasked client frame was accepted")
	}
}
