package chattest

import (
	"testing"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/protocol/registry"
)

func TestRecorder(t *testing.T) {
	events := make(chan chat.Event)
	r := record(events)
	joined := chat.Event{Kind: chat.EventPeerJoined, Peer: registry.Peer{Nickname: "bob", Instance: "b1"}}
	restarted := chat.Event{Kind: chat.EventPeerRestarted, Peer: registry.Peer{Nickname: "bob", Instance: "b2"}}
	hi := chat.Event{Kind: chat.EventMessage, Message: chat.Message{From: "bob", Text: "hi"}}
	again := chat.Event{Kind: chat.EventMessage, Message: chat.Message{From: "bob", Text: "again"}}
	for _, ev := range []chat.Event{joined, hi, restarted, again} {
		events <- ev
	}
	close(events)
	<-r.Done()

	if got := len(r.All()); got != 4 {
		t.Errorf("All: %d events, want 4", got)
	}
	if got := r.Count(chat.EventMessage); got != 2 {
		t.Errorf("Count(message) = %d, want 2", got)
	}
	if got := r.Count(chat.EventPeerLeft); got != 0 {
		t.Errorf("Count(peer-left) = %d, want 0", got)
	}
	if ms := r.Messages(); len(ms) != 2 || ms[0].Text != "hi" || ms[1].Text != "again" {
		t.Errorf("Messages = %+v, want hi then again", ms)
	}
	if ev, ok := r.FirstAbout("b2", chat.EventPeerJoined, chat.EventPeerRestarted); !ok || ev.Kind != chat.EventPeerRestarted {
		t.Errorf("FirstAbout(b2) = %v, %v; want the restart", ev.Kind, ok)
	}
	if _, ok := r.FirstAbout("b1", chat.EventPeerLeft); ok {
		t.Error("FirstAbout(b1, peer-left) found an event that was never sent")
	}
	if ev, ok := r.First(func(ev chat.Event) bool { return ev.Message.From == "bob" }); !ok || ev.Message.Text != "hi" {
		t.Errorf("First(from bob) = %q, %v; want hi", ev.Message.Text, ok)
	}
}
