package rendezvous

// Fast paths for the frames every client sends (issue 13). Every
// registration and every heartbeat went through encoding/json twice on
// the way in (protocol.DecodeClientMessage: the type, then the message)
// and the peer's list entry once more on the way out (re-encoded for
// each heartbeat that changed its last_seen second), all by reflection.
// The functions here handle the canonical byte layout of those frames,
// exactly as protocol.EncodeClientMessage and the original client write
// them, and decline everything else, which then takes the general path.
// Declining is always correct; the tests check that whatever is handled
// here comes out as the general path has it (TestDecodeFastMatchesProtocol,
// FuzzDecodeFast, TestAppendEntryMatchesJSON, TestSetLastSeen).

import (
	"reflect"
	"strconv"
	"unicode/utf8"

	"github.com/parlance-chat/parlance/protocol"
)

// Canonical frames of the messages without fields.
const (
	heartbeatJSON  = `{"type":"heartbeat"}`
	listPeersJSON  = `{"type":"list_peers"}`
	unregisterJSON = `{"type":"unregister"}`
)

// The decoded messages without fields, shared: handle never modifies them.
var (
	theHeartbeat  = &protocol.Heartbeat{}
	theListPeers  = &protocol.ListPeers{}
	theUnregister = &protocol.Unregister{}
)

// decodeFast decodes b when it is one of
//
//	{"type":"heartbeat"}  {"type":"list_peers"}  {"type":"unregister"}
//	{"type":"register","nickname":S,"local_addr":A}
//
// byte for byte, where S and A are non-empty strings with no '"', '\\' or
// control byte (so JSON unquotes each to its own bytes), S is a valid
// nickname and A is at most 64 bytes of printable ASCII. On such input
// protocol.DecodeClientMessage returns the same message (no escapes, no
// duplicate, unknown or differently cased key, valid UTF-8 within the
// size bound). ok is false for anything else, errors included: the
// caller then asks protocol.DecodeClientMessage.
func decodeFast(b []byte) (m protocol.ClientMessage, ok bool) {
	switch string(b) { // no allocation: the compiler compares in place
	case heartbeatJSON:
		return theHeartbeat, true
	case listPeersJSON:
		return theListPeers, true
	case unregisterJSON:
		return theUnregister, true
	}
	const (
		head = `{"type":"register","nickname":"`
		mid  = `","local_addr":"`
	)
	if len(b) > protocol.MaxClientFrameSize || len(b) < len(head)+len(mid)+4 ||
		string(b[:len(head)]) != head || string(b[len(b)-2:]) != `"}` {
		return nil, false
	}
	rest := b[len(head) : len(b)-2] // S","local_addr":"A
	n := plainLen(rest)
	if n == 0 || len(rest)-n < len(mid)+1 || string(rest[n:n+len(mid)]) != mid {
		return nil, false
	}
	nick, addr := rest[:n], rest[n+len(mid):]
	if len(addr) > 64 {
		return nil, false
	}
	for _, c := range addr {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return nil, false
		}
	}
	if !utf8.Valid(nick) || protocol.ValidateNickname(string(nick)) != nil {
		return nil, false
	}
	return &protocol.Register{Nickname: string(nick), LocalAddr: string(addr)}, true
}

// plainLen returns the length of the run of bytes at the start of b that
// are neither '"', '\\' nor control bytes.
func plainLen(b []byte) int {
	for i, c := range b {
		if c == '"' || c == '\\' || c < 0x20 {
			return i
		}
	}
	return len(b)
}

// plainString reports whether encoding/json writes s as its own bytes
// between quotes (with HTML escaping off): printable ASCII other than
// '"' and '\\'.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func plainStrings(ss []string) bool {
	for _, s := range ss {
		if !plainString(s) {
			return false
		}
	}
	return true
}

func appendStrings(b []byte, key string, ss []string) []byte {
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":[`...)
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, s...)
		b = append(b, '"')
	}
	return append(b, ']')
}

// peerInfoFields is the number of fields of protocol.PeerInfo that
// appendEntry writes. Should the struct have another number, appendEntry
// leaves the work to encodeEntry, so that no field is ever dropped, and
// TestAppendEntryKnowsEveryField fails until appendEntry learns it.
const peerInfoFields = 10

var entryFieldsKnown = reflect.TypeFor[protocol.PeerInfo]().NumField() == peerInfoFields

// appendEntry returns info encoded as a peer_list entry, the same bytes
// as encodeEntry, and the offset of the last_seen digits in it. Strings
// that JSON would escape take encodeEntry's path.
func appendEntry(info *protocol.PeerInfo) (entry []byte, lastSeenAt int) {
	if !entryFieldsKnown || !plainString(info.PeerID) || !plainString(info.Nickname) || !plainString(info.PublicAddr) ||
		!plainString(info.LocalAddr) || !plainString(info.Instance) || !plainString(info.Key) ||
		!plainStrings(info.Caps) || !plainStrings(info.Addrs) || !plainStrings(info.Rooms) {
		b := encodeEntry(info)
		return b, lastSeenOffset(b)
	}
	n := 100 + len(info.PeerID) + len(info.Nickname) + len(info.PublicAddr) + len(info.LocalAddr) + len(info.Instance) + len(info.Key)
	for _, c := range info.Caps {
		n += len(c) + 3
	}
	for _, a := range info.Addrs {
		n += len(a) + 3
	}
	for _, r := range info.Rooms {
		n += len(r) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, `{"peer_id":"`...)
	b = append(b, info.PeerID...)
	b = append(b, `","nickname":"`...)
	b = append(b, info.Nickname...)
	b = append(b, `","public_addr":"`...)
	b = append(b, info.PublicAddr...)
	b = append(b, `","local_addr":"`...)
	b = append(b, info.LocalAddr...)
	b = append(b, `","last_seen":`...)
	lastSeenAt = len(b)
	b = strconv.AppendInt(b, info.LastSeen, 10)
	if info.Instance != "" {
		b = append(b, `,"instance":"`...)
		b = append(b, info.Instance...)
		b = append(b, '"')
	}
	if len(info.Caps) > 0 {
		b = appendStrings(b, "caps", info.Caps)
	}
	if info.Key != "" {
		b = append(b, `,"key":"`...)
		b = append(b, info.Key...)
		b = append(b, '"')
	}
	if len(info.Addrs) > 0 {
		b = appendStrings(b, "addrs", info.Addrs)
	}
	if len(info.Rooms) > 0 {
		b = appendStrings(b, "rooms", info.Rooms)
	}
	return append(b, '}'), lastSeenAt
}

// lastSeenOffset finds the last_seen digits in an encoded entry. Inside
// a JSON string every '"' is escaped, so `,"last_seen":` occurs only as
// the key. -1 if it is missing (it never is).
func lastSeenOffset(entry []byte) int {
	const key = `,"last_seen":`
	for i := 0; i+len(key) <= len(entry); i++ {
		if string(entry[i:i+len(key)]) == key {
			return i + len(key)
		}
	}
	return -1
}

// setLastSeen updates p.info.LastSeen and p.entry to sec. With the same
// number of digits (until the year 2286) the digits are overwritten in
// place: p.entry is copied into every list built, never shared.
func (p *peer) setLastSeen(sec int64) {
	p.info.LastSeen = sec
	if p.lastSeenAt >= 0 {
		var d [20]byte
		digits := strconv.AppendInt(d[:0], sec, 10)
		if digitsAt(p.entry, p.lastSeenAt) == len(digits) {
			copy(p.entry[p.lastSeenAt:], digits)
			return
		}
	}
	p.entry, p.lastSeenAt = appendEntry(&p.info)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// digitsAt counts the digits (and a leading '-') from b[at].
func digitsAt(b []byte, at int) int {
	n := 0
	for at+n < len(b) && (isDigit(b[at+n]) || (n == 0 && b[at] == '-')) {
		n++
	}
	return n
}
