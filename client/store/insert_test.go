package store

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestInsertShapes writes, in one transaction, runs of rows that take
// every statement shape (incoming and outgoing rows of one peer, rows of
// many peers, rows with times their direction does not have) and every
// chunk size, with duplicates inside the batch, across chunks and from an
// earlier commit, and checks each row read back and each isNew against a
// model of the dedupe rule.
func TestInsertShapes(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 11))
	kinds(t, func(t *testing.T, s *Store) {
		stored := map[string]bool{} // conv key and id of every incoming row stored
		dedupeKey := func(m *Message) string {
			if m.PeerKey != "" {
				return "k" + m.PeerKey + "\x00" + m.ID
			}
			return "n" + m.PeerNick + "\x00" + m.ID
		}
		var ids []string
		next := 0
		incoming := func(key, nick string, n int) []*Message {
			ms := make([]*Message, n)
			for i := range ms {
				id := fmt.Sprintf("id-%d", next)
				switch r := rnd.IntN(10); {
				case r == 0 && len(ids) > 0:
					id = ids[rnd.IntN(len(ids))] // a duplicate, maybe of another peer's id
				case r == 1:
					id = "" // never a duplicate
				}
				ids = append(ids, id)
				ms[i] = &Message{ID: id, PeerKey: key, PeerNick: nick, Text: fmt.Sprintf("in %d", next),
					Sent: t0.Add(time.Duration(next) * time.Millisecond), Received: t0.Add(time.Hour), Encrypted: key != ""}
				next++
			}
			return ms
		}
		outgoing := func(key, nick string, n int) []*Message {
			ms := make([]*Message, n)
			for i := range ms {
				ms[i] = &Message{ID: fmt.Sprintf("out-%d", next), PeerKey: key, PeerNick: nick, Dir: Out, Text: fmt.Sprintf("out %d", next),
					Sent: t0.Add(time.Duration(next) * time.Millisecond), Expires: t0.Add(48 * time.Hour), Status: Pending, Encrypted: true}
				next++
			}
			return ms
		}
		mixed := func(n int) []*Message {
			var ms []*Message
			for i := range n {
				ms = append(ms, incoming(fmt.Sprintf("K%d", i%3), "peer", 1)...)
			}
			return ms
		}
		// Short runs of one peer, each followed by rows whose columns
		// differ: a run that took them in would be long enough for a
		// statement of one peer, which would write them wrong.
		odd := incoming("KA", "alice", 32)
		for i := 6; i < 8; i++ {
			odd[i].Encrypted = false
			odd[i+8].PeerNick = "alice2"              // a new nickname, the same peer
			odd[i+16].Delivered = t0.Add(time.Minute) // not an incoming row's time
			odd[i+24].Expires = t0.Add(time.Minute)
		}

		// An earlier commit, whose ids the batch repeats.
		before := incoming("KA", "alice", 10)
		rows := 1 // holdWriter's message
		for i, isNew := range mustAddIn(t, s, before...) {
			if isNew {
				rows++
			}
			if m := before[i]; m.ID != "" {
				stored[dedupeKey(m)] = true
			}
		}

		release := holdWriter(t, s)
		batches := [][]*Message{
			incoming("KA", "alice", 300), // 128, 128, 32, 8, 4
			mixed(20),                    // runs of one row: all columns
			incoming("", "keyless", 9),   // keyed by nickname
			odd,
			append(incoming("KB", "bob", 3), incoming("KA", "alice", 40)...), // a short run, then a long one
		}
		results := make([]chan []bool, len(batches))
		for i, ms := range batches {
			results[i] = make(chan []bool, 1)
			s.AddIncoming(ms, func(isNew []bool, err error) {
				if err != nil {
					t.Errorf("AddIncoming: %v", err)
				}
				results[i] <- isNew
			})
		}
		outs := outgoing("KA", "alice", 40)
		outs = append(outs, outgoing("KB", "bob", 6)...)
		late := &Message{ID: "late", PeerKey: "KB", PeerNick: "bob", Dir: Out, Text: "with a received time",
			Sent: t0, Received: t0.Add(time.Second), Status: Sent, Encrypted: true}
		outs = append(outs, late)
		outs = append(outs, outgoing("KB", "bob", 1)...)
		var delivered []int64
		for i, m := range outs {
			s.AddOutgoing(m, func(err error) {
				if err != nil {
					t.Errorf("AddOutgoing: %v", err)
				}
			})
			if i%2 == 0 && m.Status == Pending {
				delivered = append(delivered, m.Seq)
			}
		}
		s.MarkDelivered(delivered, t0.Add(2*time.Hour), nil) // folded into the inserts
		release()
		if err := s.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}

		var all []*Message
		for i, ms := range batches {
			isNew := <-results[i]
			for j, m := range ms {
				want := m.ID == "" || !stored[dedupeKey(m)]
				if want && m.ID != "" {
					stored[dedupeKey(m)] = true
				}
				if isNew[j] != want {
					t.Errorf("batch %d message %d (id %q, key %q): isNew %v, want %v", i, j, m.ID, m.PeerKey, isNew[j], want)
				}
				if want {
					all = append(all, m)
				}
			}
		}
		for i, m := range outs {
			if i%2 == 0 && m != late && m.Status != Delivered {
				t.Errorf("outgoing %d: status %v, want the delivery folded in", i, m.Status)
			}
		}
		all = append(all, outs...)
		seqs := map[int64]bool{}
		for _, m := range all {
			if m.Seq == 0 || seqs[m.Seq] {
				t.Fatalf("%q has seq %d, zero or taken", m.Text, m.Seq)
			}
			seqs[m.Seq] = true
			if got := mustGet(t, s, m.Seq); !sameMessage(got, *m) {
				t.Errorf("stored and read back:\n got %+v\nwant %+v", got, *m)
			}
		}
		st, err := s.Stats(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if got, want := st.Received+st.Pending+st.Delivered+st.Sent, rows+len(all); got != want {
			t.Errorf("Stats = %+v: %d rows, want %d", st, got, want)
		}
	})
}
