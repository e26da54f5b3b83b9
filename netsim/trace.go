package netsim

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"net/netip"
	"strconv"
)

// tracer writes the event trace: one JSON object a line, with the
// simulated time in nanoseconds ("t") and the event ("ev") first. Every
// line also goes into a SHA-256 hash, written or not.
type tracer struct {
	w     io.Writer
	h     hash.Hash
	buf   []byte
	lines int64
	err   error
}

func (t *tracer) init(w io.Writer) {
	t.w = w
	t.h = sha256.New()
}

func (t *tracer) begin(at int64, ev string) {
	t.buf = append(t.buf[:0], `{"t":`...)
	t.buf = strconv.AppendInt(t.buf, at, 10)
	t.buf = append(t.buf, `,"ev":`...)
	t.buf = appendJSONString(t.buf, ev)
}

func (t *tracer) str(k, v string) {
	t.buf = append(t.buf, ',')
	t.buf = appendJSONString(t.buf, k)
	t.buf = append(t.buf, ':')
	t.buf = appendJSONString(t.buf, v)
}

func (t *tracer) num(k string, v int64) {
	t.buf = append(t.buf, ',')
	t.buf = appendJSONString(t.buf, k)
	t.buf = append(t.buf, ':')
	t.buf = strconv.AppendInt(t.buf, v, 10)
}

// numNZ adds k only when v is not zero, to keep lines short.
func (t *tracer) numNZ(k string, v int64) {
	if v != 0 {
		t.num(k, v)
	}
}

func (t *tracer) end() {
	t.buf = append(t.buf, '}', '\n')
	t.h.Write(t.buf)
	t.lines++
	if t.w != nil && t.err == nil {
		_, t.err = t.w.Write(t.buf)
	}
}

// line writes an event with string fields given as key, value pairs.
func (t *tracer) line(at int64, ev string, kv ...string) {
	t.begin(at, ev)
	for i := 0; i+1 < len(kv); i += 2 {
		t.str(kv[i], kv[i+1])
	}
	t.end()
}

func (t *tracer) sum() string { return hex.EncodeToString(t.h.Sum(nil)) }

func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// TraceHash returns the hex SHA-256 of the trace so far. Two runs of one
// seed must give the same hash; CheckDeterminism checks that.
func (n *Network) TraceHash() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.tr.sum()
}

// TraceLines returns how many trace lines have been produced so far.
func (n *Network) TraceLines() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.tr.lines
}

// fnv64 is FNV-1a of a payload: the trace shows it, so that a change in
// what programs send changes the hash.
func fnv64(b []byte) uint64 { return fnvBytes(fnvOffset, b) }

const fnvOffset = 14695981039346656037

// fnvBytes continues the FNV-1a hash h with b.
func fnvBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// fnvAddrPort continues the FNV-1a hash h with an address and port.
func fnvAddrPort(h uint64, ap netip.AddrPort) uint64 {
	a := ap.Addr().As16()
	return fnvBytes(fnvBytes(h, a[:]), []byte{byte(ap.Port() >> 8), byte(ap.Port())})
}
