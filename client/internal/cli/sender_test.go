package cli

import (
	"net/netip"
	"testing"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/protocol/registry"
)

func TestSenderNameTellsSameNamedPeersApart(t *testing.T) {
	peer := func(addr, nick, instance string) registry.Peer {
		return registry.Peer{Nickname: nick, Addr: netip.MustParseAddrPort(addr), Instance: instance}
	}
	peers := []registry.Peer{
		peer("10.0.0.2:4000", "bob", "b1"),
		peer("10.0.0.2:4001", "bob", "b2"),
		peer("10.0.0.3:4000", "bob", ""),
		peer("10.0.0.4:4000", "carol", "c1"),
	}
	msg := func(from, instance, remote string) chat.Message {
		return chat.Message{From: from, Instance: instance, Remote: netip.MustParseAddrPort(remote)}
	}
	tests := []struct {
		name string
		msg  chat.Message
		want string
	}{
		{"unique nickname", msg("carol", "c1", "10.0.0.4:50000"), "carol"},
		{"unknown sender", msg("dave", "", "10.0.0.9:50000"), "dave"},
		{"shared nickname, known instance", msg("bob", "b2", "10.0.0.2:50000"), "bob@10.0.0.2:4001"},
		{"shared nickname, original sender alone on its IP", msg("bob", "", "10.0.0.3:50000"), "bob@10.0.0.3:4000"},
		{"shared nickname, two candidates on one IP", msg("bob", "", "10.0.0.2:50000"), "bob (one of several)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := senderName(peers, tt.msg); got != tt.want {
				t.Errorf("senderName = %q, want %q", got, tt.want)
			}
		})
	}
}
