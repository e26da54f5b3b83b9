package store

import (
	"context"
	"fmt"
	"time"
)

// AddOutgoing stores m, an outgoing message: m.Dir must be Out, m.Status
// Pending (queued), Sent, or Delivered (acknowledged before it was
// stored). It sets m.Seq to the row m will have, queues the write and
// returns at once; it blocks only while the writer's queue is full. done
// (may be nil) is called exactly once, on the store's writer goroutine,
// after the transaction holding the write committed (nil) or failed (the
// seq is then never used); done must not block. After Close, done gets
// ErrClosed at once, on the caller's goroutine. The store reads and may
// update m (see MarkDelivered) until done is called: do not change it
// before.
func (s *Store) AddOutgoing(m *Message, done func(error)) {
	o := s.outgoingOp(m)
	o.done = orNop(done)
	s.enqueue(o)
}

// AddIncoming stores incoming messages, each unless one with the same
// (PeerKey, ID) — or (PeerNick, ID) when PeerKey is "" — was stored
// before, in this run or an earlier one. Messages with ID "" are always
// stored. Within ms only the first of equal ids counts. done (may be nil)
// gets isNew[i], true where ms[i] was stored (and its Seq set); the rest
// keep their old rows and their Seq is untouched. Dir and Status may be
// left zero; they are set to In and Received. A zero Received is set to
// the time of the call. done runs as AddOutgoing's does; the store reads
// ms until then.
func (s *Store) AddIncoming(ms []*Message, done func(isNew []bool, err error)) {
	o := incomingOp(ms)
	o.done = withFlags(done, func() []bool { return newFlags(o) })
	s.enqueue(o)
}

// MarkDelivered turns the Pending messages among seqs into Delivered at
// time at; rows not Pending are left alone. A message whose AddOutgoing
// is still queued is stored Delivered in the first place (its Message gets
// that Status and Delivered time), when both writes fall in one
// transaction. done runs as AddOutgoing's does.
func (s *Store) MarkDelivered(seqs []int64, at time.Time, done func(error)) {
	s.enqueue(&op{kind: opDeliver, seqs: seqs, at: at, done: orNop(done)})
}

// Flush waits until everything submitted before the call has committed (or
// failed) and returns the first write error since the previous Flush, if
// any. After Close it returns ErrClosed.
func (s *Store) Flush(ctx context.Context) error {
	if err := s.call(ctx, &op{kind: opFlush}); err != nil {
		return err
	}
	s.errMu.Lock()
	defer s.errMu.Unlock()
	err := s.firstErr
	s.firstErr = nil
	return err
}

// WriteHeld asks the writer to write the messages it holds back (see
// Options.FoldWait) now, without waiting for it.
func (s *Store) WriteHeld() {
	s.enqueue(&op{kind: opFlush, done: orNop(nil)})
}

// Settle waits until everything submitted before the call has committed
// or failed. Unlike Flush it leaves the write error for Flush to report.
func (s *Store) Settle(ctx context.Context) error {
	return s.call(ctx, &op{kind: opFlush})
}

// AddOutgoingSync is AddOutgoing that waits for the commit. If ctx ends
// first it returns ctx's error, and the message may still be stored.
func (s *Store) AddOutgoingSync(ctx context.Context, m *Message) error {
	return s.call(ctx, s.outgoingOp(m))
}

// AddIncomingSync is AddIncoming that waits for the commit. If ctx ends
// first it returns ctx's error, and the messages may still be stored.
func (s *Store) AddIncomingSync(ctx context.Context, ms []*Message) ([]bool, error) {
	o := incomingOp(ms)
	if err := s.call(ctx, o); err != nil {
		return nil, err
	}
	return newFlags(o), nil
}

// MarkDeliveredSync is MarkDelivered that waits for the commit. If ctx
// ends first it returns ctx's error, and the change may still be made.
func (s *Store) MarkDeliveredSync(ctx context.Context, seqs []int64, at time.Time) error {
	return s.call(ctx, &op{kind: opDeliver, seqs: seqs, at: at})
}

// outgoingOp checks m and, if it is fine, gives it its seq.
func (s *Store) outgoingOp(m *Message) *op {
	o := &op{kind: opInsert}
	o.one[0] = m
	o.msgs = o.one[:]
	switch {
	case m == nil:
		o.err = fmt.Errorf("store: AddOutgoing: nil message")
	case m.Dir != Out:
		o.err = fmt.Errorf("store: AddOutgoing: message has direction %v, want out", m.Dir)
	case m.Status != Pending && m.Status != Sent && m.Status != Delivered:
		o.err = fmt.Errorf("store: AddOutgoing: message has status %v, want pending, sent or delivered", m.Status)
	default:
		m.Seq = s.nextSeq.Add(1) - 1
	}
	return o
}

func incomingOp(ms []*Message) *op {
	o := &op{kind: opInsert, msgs: ms}
	now := time.Now()
	for i, m := range ms {
		switch {
		case m == nil:
			o.err = fmt.Errorf("store: AddIncoming: message %d is nil", i)
		case m.Dir != 0 && m.Dir != In:
			o.err = fmt.Errorf("store: AddIncoming: message %d has direction %v, want in", i, m.Dir)
		case m.Status != 0 && m.Status != Received:
			o.err = fmt.Errorf("store: AddIncoming: message %d has status %v, want received", i, m.Status)
		}
		if o.err != nil {
			return o
		}
		m.Dir, m.Status = In, Received
		if m.Received.IsZero() {
			m.Received = now
		}
	}
	return o
}

// newFlags is AddIncoming's isNew for a committed o.
func newFlags(o *op) []bool {
	isNew := make([]bool, len(o.msgs))
	for i, seq := range o.newSeqs {
		isNew[i] = seq != 0
	}
	return isNew
}

// withFlags adapts an AddIncoming-style done (nil allowed) to an op's
// done: on success it gets flags(), which the writer has set by then.
func withFlags(done func([]bool, error), flags func() []bool) func(error) {
	return func(err error) {
		switch {
		case done == nil:
		case err != nil:
			done(nil, err)
		default:
			done(flags(), nil)
		}
	}
}

func orNop(done func(error)) func(error) {
	if done == nil {
		return func(error) {}
	}
	return done
}

// submit queues o for the writer, blocking while the queue is full. It
// fails with ErrClosed after Close and with ctx's error when ctx ends.
func (s *Store) submit(ctx context.Context, o *op) error {
	// Holding mu shared across the send is safe: Close closes s.closing
	// before it asks for mu, which ends the wait below.
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	select {
	case s.ops <- o:
		return nil
	case <-s.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// enqueue submits o for an asynchronous call; if the store is closed,
// o.done gets ErrClosed at once, on the caller's goroutine.
func (s *Store) enqueue(o *op) {
	if err := s.submit(context.Background(), o); err != nil {
		o.done(err)
	}
}

// call submits o and waits for its outcome. If ctx ends first it returns
// ctx's error; the writer still applies o.
func (s *Store) call(ctx context.Context, o *op) error {
	ch := make(chan error, 1)
	o.done = func(err error) { ch <- err }
	o.sync = true
	if err := s.submit(ctx, o); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// noteErr remembers a failed batch's error for the next Flush.
func (s *Store) noteErr(err error) {
	s.errMu.Lock()
	if s.firstErr == nil {
		s.firstErr = err
	}
	s.errMu.Unlock()
}
