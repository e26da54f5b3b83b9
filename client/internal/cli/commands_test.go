package cli

import (
	"slices"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		name string
		line string
		want Command
	}{
		{"empty line", "", Command{Kind: CmdEmpty}},
		{"only spaces", "   ", Command{Kind: CmdEmpty}},
		{"send", "/send bob hi there", Command{Kind: CmdSend, Name: "bob", Text: "hi there"}},
		{"send keeps inner spacing", "/send bob  a   b ", Command{Kind: CmdSend, Name: "bob", Text: "a   b"}},
		{"send with a selector", "/send bob@10.0.0.2:4000 hi", Command{Kind: CmdSend, Name: "bob@10.0.0.2:4000", Text: "hi"}},
		{"send with tabs", "/send\tbob\thi", Command{Kind: CmdSend, Name: "bob", Text: "hi"}},
		{"send without text", "/send bob", Command{Kind: CmdUsage, Msg: "Usage: /send <nickname> <message>"}},
		{"send with blank text", "/send bob   ", Command{Kind: CmdUsage, Msg: "Usage: /send <nickname> <message>"}},
		{"send alone", "/send", Command{Kind: CmdUsage, Msg: "Usage: /send <nickname> <message>"}},
		{"peers", "/peers", Command{Kind: CmdPeers}},
		{"help", "/help", Command{Kind: CmdHelp}},
		{"h", "/h", Command{Kind: CmdHelp}},
		{"quit", "/quit", Command{Kind: CmdQuit}},
		{"exit", "/exit", Command{Kind: CmdQuit}},
		{"q", "/q", Command{Kind: CmdQuit}},
		{"leading spaces", "  /peers", Command{Kind: CmdPeers}},
		{"whoami", "/whoami", Command{Kind: CmdWhoami}},
		{"verify", "/verify alice", Command{Kind: CmdVerify, Name: "alice"}},
		{"verify alone", "/verify", Command{Kind: CmdUsage, Msg: "Usage: /verify <nickname>"}},
		{"trust with a fingerprint", "/trust alice#GR2Q7GF", Command{Kind: CmdTrust, Name: "alice#GR2Q7GF"}},
		{"trust with two names", "/trust alice bob", Command{Kind: CmdUsage, Msg: "Usage: /trust <nickname>[#fingerprint]"}},
		{"forget", "/forget alice", Command{Kind: CmdForget, Name: "alice"}},
		{"unknown", "/foo bar", Command{Kind: CmdUnknown, Msg: "Unknown command: foo. Type /help for the list of commands."}},
		{"commands are case-sensitive", "/QUIT", Command{Kind: CmdUnknown, Msg: "Unknown command: QUIT. Type /help for the list of commands."}},
		{"text without slash", "  hello  there ", Command{Kind: CmdNotCommand, Text: "hello  there", Msg: "Not sent: you are in no room. Commands start with /: /send <nickname> <message> to a peer, /join #room to talk in a room. Type /help for the list of commands."}},
		{"send to a room", "/send #team hi all", Command{Kind: CmdSend, Name: "#team", Text: "hi all"}},
		{"send to a room without text", "/send #team", Command{Kind: CmdUsage, Msg: "Usage: /send #room <message>"}},
		{"join", "/join #team", Command{Kind: CmdJoin, Name: "#team"}},
		{"join with a secret of words", "/join #club  correct horse  battery", Command{Kind: CmdJoin, Name: "#club", Text: "correct horse  battery"}},
		{"join without #", "/join team", Command{Kind: CmdUsage, Msg: "Usage: /join #room [secret]  (a room is # and up to 32 of a-z, 0-9, _ and -; with a secret, only those who know it can find or read the room)"}},
		{"join alone", "/join", Command{Kind: CmdUsage, Msg: "Usage: /join #room [secret]  (a room is # and up to 32 of a-z, 0-9, _ and -; with a secret, only those who know it can find or read the room)"}},
		{"leave the current room", "/leave", Command{Kind: CmdLeave}},
		{"leave a room", "/leave #team", Command{Kind: CmdLeave, Name: "#team"}},
		{"leave a nickname", "/leave bob", Command{Kind: CmdUsage, Msg: "Usage: /leave [#room]  (the current room without one)"}},
		{"members", "/members #team", Command{Kind: CmdMembers, Name: "#team"}},
		{"members with two rooms", "/members #a #b", Command{Kind: CmdUsage, Msg: "Usage: /members [#room]  (the current room without one)"}},
		{"rooms", "/rooms", Command{Kind: CmdRooms}},
		{"room history", "/history #team 5", Command{Kind: CmdHistory, Name: "#team", N: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseCommand(tt.line); got != tt.want {
				t.Errorf("ParseCommand(%q) = %+v, want %+v", tt.line, got, tt.want)
			}
		})
	}
}

func TestComplete(t *testing.T) {
	names := []string{"alice", "bob@10.0.0.2:1", "bob@10.0.0.3:1", "carol"}
	tests := []struct {
		line string
		want []string
	}{
		{"/", []string{"/send ", "/peers", "/join ", "/leave", "/rooms", "/members", "/queue", "/history ", "/search ", "/whoami", "/verify ", "/trust ", "/forget ", "/help", "/quit", "/exit", "/q", "/h"}},
		{"/tr", []string{"/trust "}},
		{"/verify b", []string{"/verify bob@10.0.0.2:1", "/verify bob@10.0.0.3:1"}},
		{"/p", []string{"/peers"}},
		{"/se", []string{"/send ", "/search "}},
		{"/history b", []string{"/history bob@10.0.0.2:1", "/history bob@10.0.0.3:1"}},
		{"/send ", []string{"/send alice ", "/send bob@10.0.0.2:1 ", "/send bob@10.0.0.3:1 ", "/send carol "}},
		{"/send b", []string{"/send bob@10.0.0.2:1 ", "/send bob@10.0.0.3:1 "}},
		{"/send al", []string{"/send alice "}},
		{"/send alice hi", nil},
		{"/peers x", nil},
		{"hello", nil},
	}
	for _, tt := range tests {
		if got := complete(tt.line, names); !slices.Equal(got, tt.want) {
			t.Errorf("complete(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}

// A /join's secret never reaches the saved input history.
func TestHistoryEntry(t *testing.T) {
	for line, want := range map[string]string{
		"/join #club correct horse battery": "/join #club",
		"  /join   #club  s3cret ":          "/join #club",
		"/join #team":                       "/join #team",
		"/send bob /join #x y":              "/send bob /join #x y",
		"hello":                             "hello",
	} {
		if got := historyEntry(line); got != want {
			t.Errorf("historyEntry(%q) = %q, want %q", line, got, want)
		}
	}
}
