package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// openTemp opens a store in a fresh directory and closes it at cleanup.
func openTemp(t testing.TB) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "profile", "messages.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func openMem(t testing.TB) *Store {
	t.Helper()
	s, err := OpenMemory(Options{})
	if err != nil {
		t.Fatalf("OpenMemory: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// kinds runs f against a file store and a memory store.
func kinds(t *testing.T, f func(t *testing.T, s *Store)) {
	t.Run("on a file", func(t *testing.T) { s, _ := openTemp(t); f(t, s) })
	t.Run("in memory", func(t *testing.T) { f(t, openMem(t)) })
}

var t0 = time.UnixMilli(1_700_000_000_000)

func out(key, nick, text string) *Message {
	return &Message{ID: "o-" + text, PeerKey: key, PeerNick: nick, Dir: Out, Text: text, Sent: t0, Status: Pending, Encrypted: true}
}

func in(key, nick, id, text string) *Message {
	return &Message{ID: id, PeerKey: key, PeerNick: nick, Text: text, Sent: t0, Received: t0.Add(time.Second)}
}

func mustGet(t *testing.T, s *Store, seq int64) Message {
	t.Helper()
	m, err := s.Get(t.Context(), seq)
	if err != nil {
		t.Fatalf("Get(%d): %v", seq, err)
	}
	return m
}

func mustAddOut(t *testing.T, s *Store, ms ...*Message) {
	t.Helper()
	for _, m := range ms {
		if err := s.AddOutgoingSync(t.Context(), m); err != nil {
			t.Fatalf("AddOutgoingSync(%q): %v", m.Text, err)
		}
	}
}

func mustAddIn(t *testing.T, s *Store, ms ...*Message) []bool {
	t.Helper()
	isNew, err := s.AddIncomingSync(t.Context(), ms)
	if err != nil {
		t.Fatalf("AddIncomingSync: %v", err)
	}
	return isNew
}

// sameMessage compares two messages with times compared by instant.
func sameMessage(a, b Message) bool {
	times := func(m Message) [4]int64 {
		f := func(t time.Time) int64 {
			if t.IsZero() {
				return -1
			}
			return t.UnixMilli()
		}
		return [4]int64{f(m.Sent), f(m.Received), f(m.Delivered), f(m.Expires)}
	}
	ta, tb := times(a), times(b)
	a.Sent, a.Received, a.Delivered, a.Expires = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	b.Sent, b.Received, b.Delivered, b.Expires = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	return ta == tb && a == b
}

func TestRoundTripOfEveryField(t *testing.T) {
	kinds(t, func(t *testing.T, s *Store) {
		pending := &Message{ID: "id-1", PeerKey: "a2V5LWE=", PeerNick: "alice", Dir: Out, Text: "hello, wörld ✓",
			Sent: t0, Expires: t0.Add(time.Hour), Status: Pending, Encrypted: true}
		sent := &Message{PeerNick: "oldtimer", Dir: Out, Text: "to an original client",
			Sent: t0.Add(time.Minute), Delivered: t0.Add(time.Minute + time.Millisecond), Status: Sent}
		acked := &Message{ID: "id-3", PeerNick: "ackcapable", Dir: Out, Text: "acknowledged before it was stored",
			Sent: t0, Delivered: t0.Add(time.Second), Status: Delivered}
		incoming := &Message{ID: "id-2", PeerKey: "a2V5LWI=", PeerNick: "bob", Text: "hi\nthere",
			Sent: t0.Add(-time.Second), Received: t0.Add(2 * time.Second), Encrypted: true}
		mustAddOut(t, s, pending, sent, acked)
		if isNew := mustAddIn(t, s, incoming); !isNew[0] {
			t.Fatal("a first incoming message was reported as a duplicate")
		}
		if incoming.Dir != In || incoming.Status != Received {
			t.Errorf("AddIncoming left Dir %v Status %v, want in received", incoming.Dir, incoming.Status)
		}
		for _, m := range []*Message{pending, sent, acked, incoming} {
			if m.Seq == 0 {
				t.Fatalf("%q got no Seq", m.Text)
			}
			if got := mustGet(t, s, m.Seq); !sameMessage(got, *m) {
				t.Errorf("stored and read back:\n got %+v\nwant %+v", got, *m)
			}
		}
		if !(pending.Seq < sent.Seq && sent.Seq < acked.Seq && acked.Seq < incoming.Seq) {
			t.Errorf("seqs %d, %d, %d, %d are not in storage order", pending.Seq, sent.Seq, acked.Seq, incoming.Seq)
		}
		if _, err := s.Get(t.Context(), incoming.Seq+100); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get of a missing seq: %v, want ErrNotFound", err)
		}
	})
}

func TestTimesAreMillisecondsAndZeroIsNull(t *testing.T) {
	s := openMem(t)
	m := &Message{Dir: Out, Status: Sent, Text: "x", Sent: time.Unix(5, 123_456_789)}
	mustAddOut(t, s, m)
	got := mustGet(t, s, m.Seq)
	if want := time.Unix(5, 123_000_000); !got.Sent.Equal(want) {
		t.Errorf("Sent = %v, want %v", got.Sent, want)
	}
	if !got.Received.IsZero() || !got.Delivered.IsZero() || !got.Expires.IsZero() {
		t.Errorf("zero times did not come back zero: %+v", got)
	}
}

func TestAddIncomingDedupe(t *testing.T) {
	s, path := openTemp(t)
	tests := []struct {
		name string
		ms   []*Message
		want []bool
	}{
		{"a new batch with a duplicate inside", []*Message{in("K1", "ann", "a", "1"), in("K1", "ann", "b", "2"), in("K1", "ann2", "a", "1 again")},
			[]bool{true, true, false}},
		{"the same ids in a later batch", []*Message{in("K1", "ann", "b", "2"), in("K1", "ann", "c", "3")}, []bool{false, true}},
		{"the same id from another key", []*Message{in("K2", "ann", "a", "other key")}, []bool{true}},
		{"empty ids are always new", []*Message{in("K1", "ann", "", "e1"), in("K1", "ann", "", "e1")}, []bool{true, true}},
		{"keyless peers by nickname", []*Message{in("", "old", "x", "1"), in("", "old", "x", "1"), in("", "older", "x", "1")},
			[]bool{true, false, true}},
		{"a key and a keyless peer of one nickname", []*Message{in("K3", "old", "x", "keyed")}, []bool{true}},
		{"outgoing ids do not count", []*Message{in("K1", "ann", "o-sent", "in")}, []bool{true}},
	}
	mustAddOut(t, s, out("K1", "ann", "sent"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mustAddIn(t, s, tt.ms...)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("isNew = %v, want %v", got, tt.want)
			}
			for i, m := range tt.ms {
				if (m.Seq != 0) != tt.want[i] {
					t.Errorf("message %d: Seq %d, new %v", i, m.Seq, tt.want[i])
				}
			}
		})
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Received != 10 {
		t.Errorf("Stats().Received = %d, want 10", st.Received)
	}

	t.Run("across a reopen", func(t *testing.T) {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		got := mustAddIn(t, s2, in("K1", "ann", "a", "1"), in("", "old", "x", "1"), in("K1", "ann", "d", "4"))
		if want := []bool{false, false, true}; !reflect.DeepEqual(got, want) {
			t.Fatalf("isNew = %v, want %v", got, want)
		}
	})
}

func TestOperationsApplyInSubmitOrder(t *testing.T) {
	s := openMem(t)
	var mu sync.Mutex
	var order []int
	record := func(i int) func(error) {
		return func(err error) {
			if err != nil {
				t.Errorf("op %d: %v", i, err)
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		}
	}
	ms := make([]*Message, 50)
	for i := range ms {
		ms[i] = out("K", "k", fmt.Sprint(i))
		ms[i].Expires = t0.Add(time.Minute)
		s.AddOutgoing(ms[i], record(i))
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(ms); i++ {
		if ms[i].Seq <= ms[i-1].Seq {
			t.Fatalf("message %d got seq %d after %d", i, ms[i].Seq, ms[i-1].Seq)
		}
	}
	// A delivery submitted before an expiry wins: the expiry sees no Pending row.
	s.MarkDelivered([]int64{ms[0].Seq}, t0.Add(time.Second), record(100))
	expired, err := s.ExpireDue(t.Context(), t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(expired) != len(ms)-1 || expired[0].Seq != ms[1].Seq {
		t.Errorf("ExpireDue returned %d rows starting at %v, want %d from seq %d", len(expired), expired, len(ms)-1, ms[1].Seq)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, got := range order[:len(ms)] {
		if got != i {
			t.Fatalf("done order %v", order)
		}
	}
	if len(order) != len(ms)+1 || order[len(ms)] != 100 {
		t.Errorf("done order %v: the delivery is missing or late", order)
	}
}

func TestPendingPages(t *testing.T) {
	s := openMem(t)
	var a []*Message
	for i := range 10 {
		m := out("A", "alice", fmt.Sprint("a", i))
		b := out("B", "bob", fmt.Sprint("b", i))
		mustAddOut(t, s, m, b)
		a = append(a, m)
	}
	sent := out("A", "alice", "sent")
	sent.Status = Sent
	mustAddOut(t, s, sent)
	mustAddIn(t, s, in("A", "alice", "i", "incoming"))

	var got []int64
	after := int64(0)
	for page := 0; ; page++ {
		ms, err := s.Pending(t.Context(), "A", after, 4)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) == 0 {
			break
		}
		if len(ms) > 4 || page > 3 {
			t.Fatalf("page %d has %d messages", page, len(ms))
		}
		for _, m := range ms {
			if m.PeerKey != "A" || m.Status != Pending {
				t.Fatalf("Pending(A) returned %+v", m)
			}
			got = append(got, m.Seq)
		}
		after = ms[len(ms)-1].Seq
	}
	var want []int64
	for _, m := range a {
		want = append(want, m.Seq)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("paged seqs %v, want %v", got, want)
	}
	if all, err := s.Pending(t.Context(), "A", 0, 0); err != nil || len(all) != 10 {
		t.Errorf("Pending(A, limit 0) = %d messages, %v; want all 10", len(all), err)
	}
	if none, err := s.Pending(t.Context(), "", 0, 10); err != nil || len(none) != 0 {
		t.Errorf(`Pending("") = %v, %v; want none`, none, err)
	}
	q, err := s.Queue(t.Context())
	if err != nil || len(q) != 20 {
		t.Fatalf("Queue: %d messages, %v; want 20", len(q), err)
	}
	for i := 1; i < len(q); i++ {
		if q[i].Seq <= q[i-1].Seq {
			t.Fatalf("Queue is not ascending at %d", i)
		}
	}
}

func TestMarkDeliveredOnlyTouchesPending(t *testing.T) {
	s := openMem(t)
	p1, p2 := out("K", "k", "p1"), out("K", "k", "p2")
	sent := out("K", "k", "sent")
	sent.Status = Sent
	gone := out("K", "k", "expired")
	gone.Expires = t0
	mustAddOut(t, s, p1, p2, sent, gone)
	incoming := in("K", "k", "i", "incoming")
	mustAddIn(t, s, incoming)
	if _, err := s.ExpireDue(t.Context(), t0); err != nil {
		t.Fatal(err)
	}
	at := t0.Add(time.Minute)
	if err := s.MarkDeliveredSync(t.Context(), []int64{p1.Seq, sent.Seq, gone.Seq, incoming.Seq, 9999}, at); err != nil {
		t.Fatal(err)
	}
	want := map[int64]Status{p1.Seq: Delivered, p2.Seq: Pending, sent.Seq: Sent, gone.Seq: Expired, incoming.Seq: Received}
	for seq, st := range want {
		m := mustGet(t, s, seq)
		if m.Status != st {
			t.Errorf("%q: status %v, want %v", m.Text, m.Status, st)
		}
		if delivered := !m.Delivered.IsZero(); delivered != (st == Delivered) {
			t.Errorf("%q: Delivered time %v with status %v", m.Text, m.Delivered, st)
		}
	}
	if got := mustGet(t, s, p1.Seq).Delivered; !got.Equal(at) {
		t.Errorf("Delivered = %v, want %v", got, at)
	}
	// Delivering again changes nothing.
	if err := s.MarkDeliveredSync(t.Context(), []int64{p1.Seq}, at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, p1.Seq).Delivered; !got.Equal(at) {
		t.Errorf("a second delivery moved Delivered to %v", got)
	}
}

// A delivery that reaches the writer in the same transaction as its
// message's insert is folded into it: the row is written Delivered once,
// not inserted Pending and updated. Deliveries of rows committed earlier,
// and of seqs that are not pending, still take the UPDATE.
func TestMarkDeliveredFoldsIntoAQueuedInsert(t *testing.T) {
	s := openMem(t)
	old := out("K", "k", "committed before")
	mustAddOut(t, s, old)

	// Hold the writer in a done callback, so that what follows queues
	// up and is applied as one batch.
	release := holdWriter(t, s)
	folded, later := out("K", "k", "folded"), out("K", "k", "inserted after the delivery")
	s.AddOutgoing(folded, nil)
	if folded.Seq == 0 {
		t.Fatal("AddOutgoing did not set Seq before returning")
	}
	at := t0.Add(time.Minute)
	s.MarkDelivered([]int64{folded.Seq, old.Seq, later.Seq + 1}, at, nil)
	s.AddOutgoing(later, nil)
	waitQueued(t, s, 3)
	commits := s.commits()
	release()
	if err := s.Settle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := s.commits() - commits; n != 1 {
		t.Fatalf("%d commits after the release, want the held ops in one", n)
	}
	if folded.Status != Delivered {
		t.Errorf("the queued insert's Message has status %v: the delivery was not folded into it", folded.Status)
	}
	for _, c := range []struct {
		m    *Message
		want Status
	}{{folded, Delivered}, {old, Delivered}, {later, Pending}} {
		got := mustGet(t, s, c.m.Seq)
		if got.Status != c.want {
			t.Errorf("%q: status %v, want %v", got.Text, got.Status, c.want)
		}
		if c.want == Delivered && !got.Delivered.Equal(at) {
			t.Errorf("%q: Delivered %v, want %v", got.Text, got.Delivered, at)
		}
	}
}

// With FoldWait, a Pending outgoing message is held back until its
// delivery comes (then it is written once, Delivered), until it is
// FoldWait old, or until something is waited for (Settle, a Sync call,
// Close), which writes it first.
func TestFoldWaitHoldsPendingMessages(t *testing.T) {
	openWith := func(t *testing.T, wait time.Duration) (*Store, string) {
		path := filepath.Join(t.TempDir(), "messages.db")
		s, err := Open(path, Options{FoldWait: wait})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, path
	}
	doneCh := func() (func(error), chan error) {
		ch := make(chan error, 1)
		return func(err error) { ch <- err }, ch
	}

	t.Run("a delivery is folded into the held insert", func(t *testing.T) {
		s, _ := openWith(t, time.Hour)
		m := out("K", "k", "acked while held")
		done, stored := doneCh()
		s.AddOutgoing(m, done)
		at := t0.Add(time.Second)
		ddone, delivered := doneCh()
		s.MarkDelivered([]int64{m.Seq}, at, ddone) // asynchronous, as the chat's
		for _, ch := range []chan error{stored, delivered} {
			select {
			case err := <-ch:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the delivery did not release the held insert")
			}
		}
		if got := mustGet(t, s, m.Seq); got.Status != Delivered || !got.Delivered.Equal(at) {
			t.Errorf("row %v delivered %v, want delivered at %v", got.Status, got.Delivered, at)
		}
		if ws := s.WriterStats(); ws.Folded != 1 || ws.Updated != 0 {
			t.Errorf("WriterStats %+v, want 1 folded, 0 updated", ws)
		}
	})
	t.Run("Settle writes what is held", func(t *testing.T) {
		s, _ := openWith(t, time.Hour)
		m := out("K", "k", "held")
		s.AddOutgoing(m, nil)
		if err := s.Settle(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, s, m.Seq); got.Status != Pending {
			t.Errorf("status %v, want pending", got.Status)
		}
	})
	t.Run("a held insert is written when due", func(t *testing.T) {
		s, _ := openWith(t, 20*time.Millisecond)
		m := out("K", "k", "due")
		done, stored := doneCh()
		s.AddOutgoing(m, done)
		select {
		case err := <-stored:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the held insert was never written")
		}
		if got := mustGet(t, s, m.Seq); got.Status != Pending {
			t.Errorf("status %v, want pending", got.Status)
		}
	})
	t.Run("Close writes what is held", func(t *testing.T) {
		s, path := openWith(t, time.Hour)
		m := out("K", "k", "held at close")
		done, stored := doneCh()
		s.AddOutgoing(m, done)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-stored; err != nil {
			t.Fatalf("done: %v", err)
		}
		s2, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		if got := mustGet(t, s2, m.Seq); got.Text != m.Text || got.Status != Pending {
			t.Errorf("after reopening: %+v", got)
		}
	})
}

func TestMarkDeliveredLongLists(t *testing.T) {
	s := openMem(t)
	var seqs []int64
	for i := range 700 {
		m := out("K", "k", fmt.Sprint(i))
		s.AddOutgoing(m, func(err error) {
			if err == nil {
				seqs = append(seqs, m.Seq) // done runs on the one writer goroutine
			}
		})
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Deliver all but one, in lists of awkward lengths, some in one batch.
	for i := 0; i < 699; {
		n := min(1+i%300, 699-i)
		s.MarkDelivered(seqs[i:i+n], t0, nil)
		i += n
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Delivered != 699 || st.Pending != 1 {
		t.Errorf("Stats = %+v, want 699 delivered and 1 pending", st)
	}
	if q, _ := s.Queue(t.Context()); len(q) != 1 || q[0].Seq != seqs[699] {
		t.Errorf("Queue has %d messages, want the last one only", len(q))
	}
}

func TestExpireDueReturnsEachDueMessageOnce(t *testing.T) {
	s := openMem(t)
	early, late, never := out("K", "k", "early"), out("K", "k", "late"), out("K", "k", "never")
	early.Expires, late.Expires = t0.Add(time.Minute), t0.Add(time.Hour)
	delivered := out("K", "k", "delivered")
	delivered.Expires = t0
	mustAddOut(t, s, early, late, never, delivered)
	if err := s.MarkDeliveredSync(t.Context(), []int64{delivered.Seq}, t0); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		now  time.Time
		want []int64
	}{
		{t0, nil},
		{t0.Add(time.Minute), []int64{early.Seq}},
		{t0.Add(time.Minute), nil},
		{t0.Add(24 * time.Hour), []int64{late.Seq}},
		{t0.Add(24 * time.Hour), nil},
	}
	for i, step := range steps {
		got, err := s.ExpireDue(t.Context(), step.now)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []int64
		for _, m := range got {
			if m.Status != Expired {
				t.Errorf("step %d: returned row has status %v", i, m.Status)
			}
			seqs = append(seqs, m.Seq)
		}
		if !reflect.DeepEqual(seqs, step.want) {
			t.Errorf("step %d: ExpireDue(%v) = %v, want %v", i, step.now, seqs, step.want)
		}
	}
	if m := mustGet(t, s, never.Seq); m.Status != Pending {
		t.Errorf("a message without TTL became %v", m.Status)
	}
	st, _ := s.Stats(t.Context())
	if want := (Stats{Pending: 1, Delivered: 1, Expired: 2}); st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}
}

func TestGroupCommitBatches(t *testing.T) {
	s, _ := openTemp(t)
	const writers, each = 8, 1250
	var calls [writers * each]atomic.Int32
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				k := g*each + i
				done := func(err error) {
					if err != nil {
						t.Errorf("op %d: %v", k, err)
					}
					calls[k].Add(1)
				}
				if i%2 == 0 {
					s.AddOutgoing(out(fmt.Sprint("K", g), "n", fmt.Sprint(k)), done)
				} else {
					s.AddIncoming([]*Message{in(fmt.Sprint("K", g), "n", fmt.Sprint(k), "x")},
						func(isNew []bool, err error) { done(err) })
				}
			}
		})
	}
	wg.Wait()
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	for k := range calls {
		if n := calls[k].Load(); n != 1 {
			t.Fatalf("done of op %d called %d times", k, n)
		}
	}
	commits := s.commits()
	if commits >= writers*each {
		t.Errorf("%d commits for %d ops: no batching", commits, writers*each)
	}
	t.Logf("%d ops in %d commits", writers*each, commits)
	st, _ := s.Stats(t.Context())
	if st.Pending+st.Received != writers*each {
		t.Errorf("Stats = %+v, want %d messages", st, writers*each)
	}
}

func TestQueueSummary(t *testing.T) {
	s := openMem(t)
	a1, a2 := out("KA", "alice", "1"), out("KA", "alice2", "2")
	a1.Sent, a2.Sent = t0.Add(time.Minute), t0.Add(2*time.Minute)
	b1 := out("KB", "bob", "3")
	b1.Sent = t0.Add(time.Hour)
	z := out("KZ", "aaron", "4")
	done := out("KC", "carol", "5")
	mustAddOut(t, s, a1, a2, b1, z, done)
	if err := s.MarkDeliveredSync(t.Context(), []int64{done.Seq}, t0); err != nil {
		t.Fatal(err)
	}
	got, err := s.QueueSummary(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []PeerQueue{
		{PeerKey: "KZ", PeerNick: "aaron", Count: 1, Oldest: t0},
		{PeerKey: "KA", PeerNick: "alice2", Count: 2, Oldest: t0.Add(time.Minute)},
		{PeerKey: "KB", PeerNick: "bob", Count: 1, Oldest: t0.Add(time.Hour)},
	}
	if len(got) != len(want) {
		t.Fatalf("QueueSummary = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].PeerKey != want[i].PeerKey || got[i].PeerNick != want[i].PeerNick ||
			got[i].Count != want[i].Count || !got[i].Oldest.Equal(want[i].Oldest) {
			t.Errorf("entry %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestHistory(t *testing.T) {
	kinds(t, func(t *testing.T, s *Store) {
		mustAddOut(t, s, out("KA", "alice", "a1"))
		mustAddIn(t, s, in("KA", "alice-renamed", "1", "a2"), in("", "alice", "1", "keyless alice"), in("KB", "bob", "1", "b1"))
		mustAddOut(t, s, out("KA", "alice", "a3"), out("", "alice", "to keyless alice"))
		texts := func(ms []Message) []string {
			var ts []string
			for _, m := range ms {
				ts = append(ts, m.Text)
			}
			return ts
		}
		tests := []struct {
			key, nick string
			n         int
			want      []string
		}{
			{"KA", "", 10, []string{"a1", "a2", "a3"}},
			{"KA", "ignored", 2, []string{"a2", "a3"}},
			{"", "alice", 10, []string{"keyless alice", "to keyless alice"}},
			{"", "nobody", 10, nil},
			{"KA", "", 0, nil},
		}
		for _, tt := range tests {
			got, err := s.History(t.Context(), tt.key, tt.nick, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(texts(got), tt.want) {
				t.Errorf("History(%q, %q, %d) = %q, want %q", tt.key, tt.nick, tt.n, texts(got), tt.want)
			}
		}
	})
}

func TestBadInputIsAnErrorNotAPanic(t *testing.T) {
	s := openMem(t)
	bad := []*Message{
		nil,
		{Dir: In, Status: Pending, Text: "wrong direction"},
		{Dir: Out, Status: Expired, Text: "wrong status"},
		{Dir: Out, Status: Received, Text: "wrong status"},
		{Dir: Out, Text: "no status"},
	}
	for _, m := range bad {
		if err := s.AddOutgoingSync(t.Context(), m); err == nil {
			t.Errorf("AddOutgoing(%+v) succeeded", m)
		}
	}
	for _, ms := range [][]*Message{{nil}, {{Dir: Out, Text: "x"}}, {{Status: Pending, Text: "x"}}} {
		if _, err := s.AddIncomingSync(t.Context(), ms); err == nil {
			t.Errorf("AddIncoming(%+v) succeeded", ms[0])
		}
	}
	if isNew, err := s.AddIncomingSync(t.Context(), nil); err != nil || len(isNew) != 0 {
		t.Errorf("AddIncoming(nil) = %v, %v", isNew, err)
	}
	if err := s.MarkDeliveredSync(t.Context(), nil, t0); err != nil {
		t.Errorf("MarkDelivered(nil): %v", err)
	}
	// Refused input is no write error, and nothing was stored.
	if err := s.Flush(t.Context()); err != nil {
		t.Errorf("Flush after refused input: %v", err)
	}
	if st, _ := s.Stats(t.Context()); st != (Stats{}) {
		t.Errorf("refused input stored something: %+v", st)
	}
}

func TestClose(t *testing.T) {
	s, path := openTemp(t)
	var stored atomic.Int32
	for i := range 100 {
		s.AddOutgoing(out("K", "k", fmt.Sprint(i)), func(err error) {
			if err == nil {
				stored.Add(1)
			}
		})
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := stored.Load(); n != 100 {
		t.Errorf("Close returned with %d of 100 submitted messages stored", n)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	var got error
	s.AddOutgoing(out("K", "k", "late"), func(err error) { got = err })
	if !errors.Is(got, ErrClosed) {
		t.Errorf("AddOutgoing after Close: %v, want ErrClosed", got)
	}
	if err := s.Flush(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close: %v", err)
	}
	if _, err := s.Queue(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Queue after Close: %v", err)
	}
	if _, err := s.Search(t.Context(), "x", 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Search after Close: %v", err)
	}
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if q, _ := s2.Queue(t.Context()); len(q) != 100 {
		t.Errorf("after reopening, %d queued messages, want 100", len(q))
	}
}

func TestSyncCallsHonourContext(t *testing.T) {
	s := openMem(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.AddOutgoingSync(ctx, out("K", "k", "x")); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("AddOutgoingSync with a cancelled context: %v", err)
	}
	if err := s.Flush(ctx); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("Flush with a cancelled context: %v", err)
	}
}

func TestStrings(t *testing.T) {
	for v, want := range map[fmt.Stringer]string{
		Out: "out", In: "in", Direction(9): "direction(9)",
		Pending: "pending", Sent: "sent", Delivered: "delivered", Expired: "expired", Received: "received", Status(0): "status(0)",
	} {
		if got := v.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, tt := range []struct {
		opts Options
		sync int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{
		{Options{}, 2},
		{Options{NoSync: true, MaxBatch: 1}, 1},
	} {
		s, err := Open(filepath.Join(t.TempDir(), "messages.db"), tt.opts)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var sync int
		if err := s.wdb.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil || sync != tt.sync {
			t.Errorf("%+v: synchronous = %d (%v), want %d", tt.opts, sync, err, tt.sync)
		}
		if tt.opts.MaxBatch != 1 {
			continue
		}
		before := s.commits()
		for i := range 50 {
			s.AddOutgoing(out("K", "k", fmt.Sprint(i)), nil)
		}
		if err := s.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n := s.commits() - before; n != 50 {
			t.Errorf("MaxBatch 1: %d commits for 50 operations", n)
		}
	}
}
