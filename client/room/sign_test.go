package room

import (
	"errors"
	"testing"

	"github.com/parlance-chat/parlance/protocol"
)

func signedMessage(t *testing.T) *protocol.RoomMessage {
	t.Helper()
	m := &protocol.RoomMessage{Room: mustRoom(t, "#general", "").ID, Nick: "bob", Seq: 7, Time: 1795739259123,
		Deps: []protocol.RoomSeq{{Author: protocol.EncodePublicKey(testPub(2)), Seq: 3}}, Text: "hello room"}
	Sign(testKey(1), m)
	return m
}

func TestSignVerify(t *testing.T) {
	m := signedMessage(t)
	if m.Author != protocol.EncodePublicKey(testPub(1)) {
		t.Fatalf("Sign set author %s", m.Author)
	}
	if err := Verify(m); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// What the receiver sees went through the wire form.
	line, err := protocol.EncodeRoomMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	back, err := protocol.DecodeRoomMessage(line)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(back); err != nil {
		t.Fatalf("Verify after the wire: %v", err)
	}
}

// Any single change to a signed message breaks its signature, and so does
// moving it to another room.
func TestVerifyRefusesAnyChange(t *testing.T) {
	other := protocol.EncodePublicKey(testPub(3))
	changes := []struct {
		name   string
		change func(m *protocol.RoomMessage)
	}{
		{"moved to another room", func(m *protocol.RoomMessage) { m.Room = mustRoom(t, "#general", "secret").ID }},
		{"another author", func(m *protocol.RoomMessage) { m.Author = other }},
		{"nick", func(m *protocol.RoomMessage) { m.Nick = "alice" }},
		{"seq", func(m *protocol.RoomMessage) { m.Seq++ }},
		{"time", func(m *protocol.RoomMessage) { m.Time-- }},
		{"dep seq", func(m *protocol.RoomMessage) { m.Deps[0].Seq = 2 }},
		{"dep author", func(m *protocol.RoomMessage) { m.Deps[0].Author = other }},
		{"dep removed", func(m *protocol.RoomMessage) { m.Deps = nil }},
		{"dep added", func(m *protocol.RoomMessage) { m.Deps = append(m.Deps, protocol.RoomSeq{Author: other, Seq: 1}) }},
		{"text", func(m *protocol.RoomMessage) { m.Text = "hello roon" }},
		{"sig bit", func(m *protocol.RoomMessage) { m.Sig = flipBase64(m.Sig) }},
		{"sig missing", func(m *protocol.RoomMessage) { m.Sig = "" }},
		{"author not a key", func(m *protocol.RoomMessage) { m.Author = "bob" }},
	}
	for _, tt := range changes {
		t.Run(tt.name, func(t *testing.T) {
			m := signedMessage(t)
			tt.change(m)
			if err := Verify(m); !errors.Is(err, ErrBadSignature) {
				t.Errorf("Verify: %v, want ErrBadSignature", err)
			}
		})
	}
}

// flipBase64 changes the first character of a base64 string to another
// valid one.
func flipBase64(s string) string {
	c := byte('A')
	if s[0] == 'A' {
		c = 'B'
	}
	return string(c) + s[1:]
}
