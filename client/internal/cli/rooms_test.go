package cli

import (
	"errors"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/protocol"
)

func TestRoomLine(t *testing.T) {
	key := "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw="
	fp := protocol.KeyFingerprint(key)[:7]
	at := time.Unix(3661, 0)
	base := chat.RoomMessage{Room: "#team", Author: key, Nick: "bob", Text: "hi", Received: at, Sent: at.Add(-time.Hour), Trust: trust.StateKnown}
	tests := []struct {
		name string
		edit func(*chat.RoomMessage)
		want string
	}{
		{"plain", func(*chat.RoomMessage) {}, "[01:01:01] #team bob: hi"},
		{"ours, at the time written", func(m *chat.RoomMessage) { m.Own = true }, "[00:01:01] #team you: hi"},
		{"a nickname pinned to another key", func(m *chat.RoomMessage) { m.Trust = trust.StateChanged },
			"[01:01:01] #team (not the bob you know) bob#" + fp + ": hi"},
		{"escapes", func(m *chat.RoomMessage) { m.Nick, m.Text, m.InvalidNick = "b\x1bob", "\x1b[2Jx", true },
			`[01:01:01] #team (invalid name) b\x1bob: \x1b[2Jx`},
		{"late, with gaps", func(m *chat.RoomMessage) { m.Late, m.Unmet = true, 2 },
			"[01:01:01] #team (late, 2 earlier message(s) missing) bob: hi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := base
			tt.edit(&m)
			if got := roomLine(m, time.UTC); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestRoomTexts(t *testing.T) {
	info := chat.RoomInfo{Name: "#team", Private: true, Current: true,
		Members: []chat.RoomMember{{Nickname: "bob", Key: "6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw="}}}
	fp := protocol.KeyFingerprint(info.Members[0].Key)[:7]
	for got, want := range map[string]string{
		joinText(info, nil):                            "Joined #team (private room, 1 other member(s): bob#" + fp + "). Lines without / now go to #team.",
		joinText(chat.RoomInfo{Name: "#x"}, nil):       "Joined #x (public room, nobody else here yet). Lines without / now go to #x.",
		roomsText(nil):                                 "You are in no room. /join #room joins one.",
		roomsText([]chat.RoomInfo{info, {Name: "#x"}}): "2 room(s):\n  #team  (private, current) 1 other member(s)\n  #x  (public) 0 other member(s)",
		membersText(chat.RoomInfo{Name: "#x"}):         "Nobody else is in #x now.",
		membersText(info):                              "1 other member(s) of #team: bob#" + fp,
		roomErrText(chat.ErrNoRoom):                    "You are in no room: /join #room first, or /send #room <message>.",
		roomErrText(errors.Join(chat.ErrRoomRate)):     "Not sent: sending too fast in this room.",
	} {
		if got != want {
			t.Errorf("got  %q\nwant %q", got, want)
		}
	}
}
