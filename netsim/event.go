package netsim

// sendItem is something a program sent during the current instant. The
// scheduler sorts the instant's items by (time, source host, source socket,
// the socket's sequence) before it draws any random number for them, so the order in
// which goroutines happened to run does not leak into the trace.
type sendItem struct {
	sentAt int64
	src    int32
	ep     uint64
	seq    uint64
	dg     *datagram
	ch     *chunk
}

// event is a scheduled delivery. Events are ordered by (at, src, ep, seq,
// sub): time, source host, source socket (a UDP socket's id, counting up
// per host, or a stream end's streamEP), its sequence; sub tells apart the
// copies one send gives rise to (per-receiver reschedules, duplicates,
// releases).
type event struct {
	at  int64
	src int32
	ep  uint64
	seq uint64
	sub uint32
	dg  *datagram
	rcv *packetConn // one receiver of a datagram; nil: all of them
	dup bool        // a duplicate: not duplicated again
	ch  *chunk
	rtx *conn // a dialing conn's SYN retransmission timer (sub counts them)
}

func (a *event) less(b *event) bool {
	if a.at != b.at {
		return a.at < b.at
	}
	if a.src != b.src {
		return a.src < b.src
	}
	if a.ep != b.ep {
		return a.ep < b.ep
	}
	if a.seq != b.seq {
		return a.seq < b.seq
	}
	return a.sub < b.sub
}

// eventHeap is a binary min-heap of events by value (no interface calls, no
// per-event allocation).
type eventHeap struct{ s []event }

func (h *eventHeap) peek() (int64, bool) {
	if len(h.s) == 0 {
		return 0, false
	}
	return h.s[0].at, true
}

func (h *eventHeap) push(e event) {
	h.s = append(h.s, e)
	i := len(h.s) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h.s[i].less(&h.s[p]) {
			break
		}
		h.s[i], h.s[p] = h.s[p], h.s[i]
		i = p
	}
}

func (h *eventHeap) pop() event {
	top := h.s[0]
	last := len(h.s) - 1
	h.s[0] = h.s[last]
	h.s[last] = event{}
	h.s = h.s[:last]
	i := 0
	for {
		l := 2*i + 1
		if l >= last {
			break
		}
		m := l
		if r := l + 1; r < last && h.s[r].less(&h.s[l]) {
			m = r
		}
		if !h.s[m].less(&h.s[i]) {
			break
		}
		h.s[i], h.s[m] = h.s[m], h.s[i]
		i = m
	}
	return top
}
