package protocol

// A fast path for DecodeDatagram. Every peer decodes every discovery
// datagram on its segment, so with N peers the segment decodes N times each
// announce; encoding/json (reflection, two passes: peekType then the
// message) costs about 2 us a datagram and dominated a 1,000-peer
// simulation.
//
// decodeDatagramFast accepts only the exact byte layout that EncodeDatagram
// (and the original) produce:
//
//	{"type":"announce","nickname":S,"tcp_port":P[,"instance":S][,"caps":[S(,S)*]][,"rooms":[T(,T)*]][,"key":S,"ts":N,"sig":S]}
//	{"type":"goodbye","nickname":S[,"instance":S]}
//	{"type":"query"[,"instance":S]}
//
// where S is a non-empty string of bytes other than '"', '\\' and control
// bytes (< 0x20), P is a decimal integer from 1 to 65535 without leading
// zeros, T a string of RoomTagLen lowercase hex characters and N a
// positive decimal integer of at most 18 digits without leading zeros. Keys appear once each, in exactly this order and case, with
// no whitespace. On such input encoding/json unquotes every string to its
// own bytes (the input is valid UTF-8: checkInput ran first), matches every
// key exactly, sees no duplicate and no unknown key, so the slow path's
// result is the one built here. The fast path then runs the same validation
// (checkIdentity's parts, checkInstance, checkRooms, the signature
// fields' shape) and, if anything fails or the input differs
// from the layout in any byte, reports "not handled" and the slow path
// decides, errors included. FuzzDatagramFastPath checks the equivalence.
//
// chatfast.go does the same for chat lines and acks, and adds encoders
// that skip encoding/json.

// decodeDatagramFast decodes b if it has the canonical layout and is valid.
// ok is false when b is not handled; the caller then uses the slow path.
// b must already have passed checkInput.
func decodeDatagramFast(b []byte) (d Datagram, ok bool) {
	const prefix = `{"type":"`
	if len(b) < len(prefix)+2 || string(b[:len(prefix)]) != prefix || b[len(b)-1] != '}' {
		return nil, false
	}
	r := fastReader{b: b, i: len(prefix)}
	switch {
	case r.lit(`announce"`):
		return r.announce()
	case r.lit(`goodbye"`):
		return r.goodbye()
	case r.lit(`query"`):
		return r.query()
	}
	return nil, false
}

// fastReader scans b from i. Its methods consume input only on success.
type fastReader struct {
	b []byte
	i int
}

// lit consumes s if the input continues with it.
func (r *fastReader) lit(s string) bool {
	if len(r.b)-r.i < len(s) || string(r.b[r.i:r.i+len(s)]) != s {
		return false
	}
	r.i += len(s)
	return true
}

// str consumes a non-empty plain string (after its opening quote has been
// consumed) and its closing quote.
func (r *fastReader) str() (string, bool) {
	i := r.i
	s, ok := r.span()
	if !ok || len(s) == 0 {
		r.i = i
		return "", false
	}
	// A string of its own, not a slice of one copy of b: a nickname fits
	// the runtime's tiny allocator, and the garbage collector, which a
	// 1,000-peer simulation keeps busy, runs in proportion to the bytes
	// allocated.
	return string(s), true
}

// span consumes a plain string, possibly empty (after its opening quote
// has been consumed), and its closing quote, and returns the bytes between
// the quotes. Plain: no '\\' and no control byte, so encoding/json
// unquotes it to these same bytes (b is valid UTF-8: checkInput ran).
func (r *fastReader) span() ([]byte, bool) {
	start := r.i
	for j := start; j < len(r.b); j++ {
		switch c := r.b[j]; {
		case c == '"':
			r.i = j + 1
			return r.b[start:j], true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// port consumes a decimal integer from 1 to 65535 without leading zeros.
func (r *fastReader) port() (uint16, bool) {
	v, j := 0, r.i
	for ; j < len(r.b) && j-r.i < 6; j++ {
		c := r.b[j]
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int(c-'0')
	}
	if j == r.i || j-r.i > 5 || r.b[r.i] == '0' || v > 65535 {
		return 0, false
	}
	r.i = j
	return uint16(v), true
}

// int consumes a positive decimal integer of at most 18 digits without
// leading zeros.
func (r *fastReader) int() (int64, bool) {
	var v int64
	j := r.i
	for ; j < len(r.b) && j-r.i < 19; j++ {
		c := r.b[j]
		if c < '0' || c > '9' {
			break
		}
		v = v*10 + int64(c-'0')
	}
	n := j - r.i
	if n == 0 || n > 18 || r.b[r.i] == '0' {
		return 0, false
	}
	r.i = j
	return v, true
}

// signed consumes an integer as encoding/json accepts it for an int64 and
// the original writes it: an optional '-', then 0 or at most 18 digits
// without leading zeros. "-0", valid JSON, is left to the slow path.
func (r *fastReader) signed() (int64, bool) {
	i := r.i
	neg := i < len(r.b) && r.b[i] == '-'
	if neg {
		i++
	}
	if !neg && i < len(r.b) && r.b[i] == '0' {
		if i+1 < len(r.b) && '0' <= r.b[i+1] && r.b[i+1] <= '9' {
			return 0, false
		}
		r.i = i + 1
		return 0, true
	}
	rest := fastReader{b: r.b, i: i}
	v, ok := rest.int()
	if !ok {
		return 0, false
	}
	r.i = rest.i
	if neg {
		v = -v
	}
	return v, true
}

// end reports whether the input ends here with the object's closing brace.
func (r *fastReader) end() bool { return r.i == len(r.b)-1 && r.b[r.i] == '}' }

// instance consumes an optional `,"instance":S`.
func (r *fastReader) instance() (string, bool) {
	if !r.lit(`,"instance":"`) {
		return "", true
	}
	return r.str()
}

func (r *fastReader) announce() (Datagram, bool) {
	if !r.lit(`,"nickname":"`) {
		return nil, false
	}
	nick, ok := r.str()
	if !ok || !r.lit(`,"tcp_port":`) {
		return nil, false
	}
	port, ok := r.port()
	if !ok {
		return nil, false
	}
	inst, ok := r.instance()
	if !ok {
		return nil, false
	}
	var caps []string
	if r.lit(`,"caps":["`) {
		n := 1
		for j := r.i; j < len(r.b)-1; j++ {
			if r.b[j] == ',' {
				n++ // an upper bound: commas inside strings count too
			}
		}
		if n > MaxCaps {
			return nil, false
		}
		caps = make([]string, 0, n)
		for {
			c, ok := r.capStr()
			if !ok {
				return nil, false
			}
			caps = append(caps, c)
			if r.lit(`]`) {
				break
			}
			if !r.lit(`,"`) {
				return nil, false
			}
		}
	}
	var rooms []string
	if r.lit(`,"rooms":["`) {
		if rooms, ok = r.roomTags(); !ok {
			return nil, false
		}
	}
	var sig Signature
	if r.lit(`,"key":"`) {
		if sig.Key, ok = r.str(); !ok || !r.lit(`,"ts":`) {
			return nil, false
		}
		if sig.TS, ok = r.int(); !ok || !r.lit(`,"sig":"`) {
			return nil, false
		}
		if sig.Sig, ok = r.str(); !ok {
			return nil, false
		}
	}
	if !r.end() {
		return nil, false
	}
	if !validNickname(nick) || checkInstance("announce", inst) != nil || checkCaps("announce", caps) != nil ||
		checkRooms("announce", rooms) != nil || sig.check("announce") != nil {
		return nil, false
	}
	return &Announce{Nickname: nick, TCPPort: port, Instance: inst, Caps: caps, Rooms: rooms, Signature: sig}, true
}

// roomTags consumes the rest of a list of room tags (after its `["`)
// and its closing bracket: T"(,"T")*] where each T is RoomTagLen
// lowercase hex characters, at most MaxRoomTags of them. The tags share
// one string, so a list costs two allocations however long it is.
func (r *fastReader) roomTags() ([]string, bool) {
	const stride = RoomTagLen + 3 // T","
	start := r.i
	n := 0
	for j := start; ; j += stride {
		if n == MaxRoomTags || len(r.b)-j < RoomTagLen+2 || !isRoomTag(r.b[j:j+RoomTagLen]) || r.b[j+RoomTagLen] != '"' {
			return nil, false
		}
		n++
		if r.b[j+RoomTagLen+1] == ']' {
			break
		}
		if len(r.b)-j < stride || string(r.b[j+RoomTagLen+1:j+stride]) != `,"` {
			return nil, false
		}
	}
	all := string(r.b[start : start+n*stride-3])
	tags := make([]string, n)
	for k := range tags {
		tags[k] = all[k*stride : k*stride+RoomTagLen]
	}
	r.i = start + n*stride - 1
	return tags, true
}

func (r *fastReader) goodbye() (Datagram, bool) {
	if !r.lit(`,"nickname":"`) {
		return nil, false
	}
	nick, ok := r.str()
	if !ok {
		return nil, false
	}
	inst, ok := r.instance()
	if !ok || !r.end() {
		return nil, false
	}
	if !validNickname(nick) || checkInstance("goodbye", inst) != nil {
		return nil, false
	}
	return &Goodbye{Nickname: nick, Instance: inst}, true
}

func (r *fastReader) query() (Datagram, bool) {
	inst, ok := r.instance()
	if !ok || !r.end() {
		return nil, false
	}
	if checkInstance("query", inst) != nil {
		return nil, false
	}
	return &Query{Instance: inst}, true
}

// validNickname is ValidateNickname(nick) == nil, cheaper in the usual case.
func validNickname(nick string) bool {
	return plainNickname(nick) || ValidateNickname(nick) == nil
}

// plainNickname reports whether nick is a valid nickname by a cheap test
// that covers the usual case: 1 to MaxNicknameLen printable ASCII bytes
// (' ' to '~'), not starting or ending with a space. ValidateNickname
// accepts every such string (no invalid UTF-8, no whitespace but interior
// spaces, no newline, no control character); for any other string the
// caller asks ValidateNickname.
func plainNickname(nick string) bool {
	if nick == "" || len(nick) > MaxNicknameLen || nick[0] == ' ' || nick[len(nick)-1] == ' ' {
		return false
	}
	for i := 0; i < len(nick); i++ {
		if c := nick[i]; c < ' ' || c > '~' {
			return false
		}
	}
	return true
}

// capStr is str for a capability: a known one returns the package's
// constant without allocating.
func (r *fastReader) capStr() (string, bool) {
	for _, c := range knownCaps {
		if len(r.b)-r.i > len(c) && string(r.b[r.i:r.i+len(c)]) == c && r.b[r.i+len(c)] == '"' {
			r.i += len(c) + 1
			return c, true
		}
	}
	return r.str()
}

var knownCaps = [...]string{CapQuery, CapGoodbye, CapAck, CapPush, CapNoise}
