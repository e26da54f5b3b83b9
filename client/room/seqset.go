package room

import "sort"

// span is the sequence numbers lo to hi, both included.
type span struct{ lo, hi uint64 }

// seqSet is a set of sequence numbers as sorted, disjoint, non-adjacent
// spans. An author's delivered seqs are one span unless a message was
// delivered past a gap, so the set stays small.
type seqSet struct{ spans []span }

// has reports whether s is in the set.
func (x *seqSet) has(s uint64) bool {
	i := x.search(s)
	return i < len(x.spans) && x.spans[i].lo <= s
}

// search returns the index of the first span whose hi is at least s.
func (x *seqSet) search(s uint64) int {
	return sort.Search(len(x.spans), func(i int) bool { return x.spans[i].hi >= s })
}

// add puts s in the set, merging spans it joins.
func (x *seqSet) add(s uint64) {
	i := x.search(s)
	if i < len(x.spans) && x.spans[i].lo <= s {
		return
	}
	joinsPrev := i > 0 && x.spans[i-1].hi+1 == s
	joinsNext := i < len(x.spans) && x.spans[i].lo == s+1
	switch {
	case joinsPrev && joinsNext:
		x.spans[i-1].hi = x.spans[i].hi
		x.spans = append(x.spans[:i], x.spans[i+1:]...)
	case joinsPrev:
		x.spans[i-1].hi = s
	case joinsNext:
		x.spans[i].lo = s
	default:
		x.spans = append(x.spans, span{})
		copy(x.spans[i+1:], x.spans[i:])
		x.spans[i] = span{s, s}
	}
}

// max returns the highest seq in the set, 0 when empty.
func (x *seqSet) max() uint64 {
	if len(x.spans) == 0 {
		return 0
	}
	return x.spans[len(x.spans)-1].hi
}

// contiguousFrom returns the highest seq h such that base..h are all in
// the set, or base-1 when base is not.
func (x *seqSet) contiguousFrom(base uint64) uint64 {
	i := x.search(base)
	if i < len(x.spans) && x.spans[i].lo <= base {
		return x.spans[i].hi
	}
	return base - 1
}

// fillLowestGap merges the two lowest spans, adding the seqs between
// them, and returns that gap. Only called when there are two spans or
// more.
func (x *seqSet) fillLowestGap() span {
	gap := span{x.spans[0].hi + 1, x.spans[1].lo - 1}
	x.spans[1].lo = x.spans[0].lo
	x.spans = append(x.spans[:0], x.spans[1:]...)
	return gap
}
