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
		{"text without slash", "hello", Command{Kind: CmdNotCommand, Msg: "Commands must start with /. Type /help for the list of commands."}},
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
		{"/", []string{"/send ", "/peers", "/queue", "/history ", "/search ", "/whoami", "/verify ", "/trust ", "/forget ", "/help", "/quit", "/exit", "/q", "/h"}},
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
