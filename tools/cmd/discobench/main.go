// Command discobench measures the parlance client on real sockets:
// mutual discovery time of two peers started about a second apart; how
// soon the second can deliver its first message to the first (from its
// start, and from mutual discovery: the connection, the Noise handshake
// and the ack); how long a peer that quits stays in the other's peer list;
// and messages per second from one sender to one receiver over loopback
// with none lost, each inside the session.
//
// It multicasts, so it runs only inside a private network namespace:
//
//	go build -o /tmp/discobench ./tools/cmd/discobench
//	unshare -n sh -c 'ip link set lo up; ip link set lo multicast on;
//	  ip route add 224.0.0.0/4 dev lo src 127.0.0.1; /tmp/discobench'
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/netsim/netns"
)

func main() {
	runs := flag.Int("runs", 20, "discovery runs")
	gap := flag.Duration("gap", time.Second, "time between the two peers' starts")
	messages := flag.Int("messages", 20000, "messages for the throughput run")
	flag.Parse()
	if err := netns.Check(); err != nil {
		fmt.Fprintf(os.Stderr, "discobench: refusing to multicast outside a private network namespace: %v\n", err)
		os.Exit(2)
	}
	ctx := context.Background()
	if err := run(ctx, *runs, *gap, *messages); err != nil {
		fmt.Fprintf(os.Stderr, "discobench: %v\n", err)
		os.Exit(1)
	}
}

type node struct {
	*chat.Node
	events chan chat.Event
	done   chan struct{}
}

func start(ctx context.Context, nick string, seed uint64) (*node, error) {
	n, err := chat.Start(ctx, chat.Config{Network: chat.OSNetwork{}, Nickname: nick, Rand: rand.New(rand.NewPCG(seed, 7))})
	if err != nil {
		return nil, err
	}
	nd := &node{Node: n, events: make(chan chat.Event, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(nd.done)
		for ev := range n.Events() {
			nd.events <- ev
		}
		close(nd.events)
	}()
	return nd, nil
}

func (n *node) close() {
	n.Close()
	<-n.done
}

// waitFor returns the time at which the node noticed the first event
// matching ok (Event.Time, not when it was read here: a node's events may
// wait in the buffer while the other node is measured).
func (n *node) waitFor(ok func(chat.Event) bool, limit time.Duration) (time.Time, error) {
	deadline := time.After(limit)
	for {
		select {
		case ev, open := <-n.events:
			if !open {
				return time.Time{}, fmt.Errorf("%s closed", n.Nickname())
			}
			if ok(ev) {
				return ev.Time, nil
			}
		case <-deadline:
			return time.Time{}, fmt.Errorf("%s: no matching event within %v", n.Nickname(), limit)
		}
	}
}

func peerEvent(kind chat.EventKind, instance string) func(chat.Event) bool {
	return func(ev chat.Event) bool { return ev.Kind == kind && ev.Peer.Instance == instance }
}

func run(ctx context.Context, runs int, gap time.Duration, messages int) error {
	var mutual, firstDelivered, mutualToDelivered, gone []time.Duration
	for i := range runs {
		a, err := start(ctx, "alice", uint64(2*i+1))
		if err != nil {
			return err
		}
		time.Sleep(gap)
		t0 := time.Now()
		b, err := start(ctx, "bob", uint64(2*i+2))
		if err != nil {
			return err
		}
		// bob sends as soon as he lists alice: the first moment a user
		// could.
		tb, err := b.waitFor(peerEvent(chat.EventPeerJoined, a.Instance()), 5*time.Second)
		if err != nil {
			return err
		}
		res, err := b.Send(ctx, "alice", "first message")
		td := time.Now()
		if err != nil || res.Status != chat.Delivered || !res.Encrypted {
			return fmt.Errorf("run %d: first message: %v, encrypted %v: %v", i, res.Status, res.Encrypted, err)
		}
		ta, err := a.waitFor(peerEvent(chat.EventPeerJoined, b.Instance()), 5*time.Second)
		if err != nil {
			return err
		}
		both := ta
		if tb.After(ta) {
			both = tb
		}
		mutual = append(mutual, both.Sub(t0))
		firstDelivered = append(firstDelivered, td.Sub(t0))
		mutualToDelivered = append(mutualToDelivered, td.Sub(both))
		// bob quits: how long until alice no longer lists him.
		t1 := time.Now()
		go b.close()
		tl, err := a.waitFor(peerEvent(chat.EventPeerLeft, b.Instance()), 20*time.Second)
		if err != nil {
			return err
		}
		gone = append(gone, tl.Sub(t1))
		<-b.done
		a.close()
	}
	fmt.Printf("mutual discovery, second peer started %v after the first (%d runs): %s\n", gap, runs, summary(mutual))
	fmt.Printf("second peer's start to its first message Delivered (encrypted; sent when it lists the first) (%d runs): %s\n", runs, summary(firstDelivered))
	fmt.Printf("mutual discovery to that message Delivered (connect, handshake, ack) (%d runs): %s\n", runs, summary(mutualToDelivered))
	fmt.Printf("quit peer gone from the other's /peers (%d runs): %s\n", runs, summary(gone))

	a, err := start(ctx, "alice", 1001)
	if err != nil {
		return err
	}
	defer a.close()
	b, err := start(ctx, "bob", 1002)
	if err != nil {
		return err
	}
	defer b.close()
	if _, err := a.waitFor(peerEvent(chat.EventPeerJoined, b.Instance()), 5*time.Second); err != nil {
		return err
	}
	received := make(chan int)
	go func() {
		n := 0
		for ev := range b.events {
			if ev.Kind == chat.EventMessage {
				n++
				if n == messages {
					break
				}
			}
		}
		received <- n
	}()
	t0 := time.Now()
	for i := range messages {
		res, err := a.Send(ctx, "bob", fmt.Sprintf("message %d", i))
		if err != nil || res.Status != chat.Delivered || !res.Encrypted {
			return fmt.Errorf("message %d: %v, encrypted %v: %v", i, res.Status, res.Encrypted, err)
		}
	}
	sent := time.Since(t0)
	var got int
	select {
	case got = <-received:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("receiver did not see all %d messages", messages)
	}
	elapsed := time.Since(t0)
	fmt.Printf("messages, one sender to one receiver over loopback, encrypted, each acknowledged: %d sent in %v, %d received, %d lost: %.0f messages/s\n",
		messages, sent.Round(time.Millisecond), got, messages-got, float64(messages)/elapsed.Seconds())
	return nil
}

func summary(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return fmt.Sprintf("median %v, p90 %v, min %v, max %v",
		q(0.5).Round(100*time.Microsecond), q(0.9).Round(100*time.Microsecond), s[0].Round(100*time.Microsecond), s[len(s)-1].Round(100*time.Microsecond))
}
