// Package chattest records what chat nodes report, for tests and tools
// that run real nodes, as net/http/httptest does for HTTP servers.
//
// It imports only package chat and the standard library, so it works with
// any chat.Network: simulated hosts or real sockets.
package chattest

import (
	"slices"
	"sync"

	"github.com/parlance-chat/parlance/client/chat"
)

// Recorder keeps every event of one node instance. Its methods may be
// called from any goroutine while the node runs.
type Recorder struct {
	done   chan struct{}
	mu     sync.Mutex
	events []chat.Event
}

// Record starts recording n's events. It owns n.Events from then on: the
// recording goroutine ends when the node closes that channel, which it
// does when it stops (see Done).
func Record(n *chat.Node) *Recorder { return record(n.Events()) }

func record(events <-chan chat.Event) *Recorder {
	r := &Recorder{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for ev := range events {
			r.mu.Lock()
			r.events = append(r.events, ev)
			r.mu.Unlock()
		}
	}()
	return r
}

// Done is closed once the node has closed its events and the recorder has
// kept the last of them. Wait on it after closing the node so that All
// holds every event and no goroutine outlives the node.
func (r *Recorder) Done() <-chan struct{} { return r.done }

// All returns a copy of the events recorded so far, oldest first.
func (r *Recorder) All() []chat.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// First returns the first event recorded for which match is true, and
// whether there is one.
func (r *Recorder) First(match func(chat.Event) bool) (chat.Event, bool) {
	for _, ev := range r.All() {
		if match(ev) {
			return ev, true
		}
	}
	return chat.Event{}, false
}

// FirstAbout returns the first event of one of kinds whose Peer is the
// given instance, and whether there is one.
func (r *Recorder) FirstAbout(instance string, kinds ...chat.EventKind) (chat.Event, bool) {
	return r.First(func(ev chat.Event) bool {
		return slices.Contains(kinds, ev.Kind) && ev.Peer.Instance == instance
	})
}

// Count returns how many events of kind were recorded.
func (r *Recorder) Count(kind chat.EventKind) int {
	n := 0
	for _, ev := range r.All() {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// Messages returns the messages recorded, in the order they arrived.
func (r *Recorder) Messages() []chat.Message {
	var ms []chat.Message
	for _, ev := range r.All() {
		if ev.Kind == chat.EventMessage {
			ms = append(ms, ev.Message)
		}
	}
	return ms
}
