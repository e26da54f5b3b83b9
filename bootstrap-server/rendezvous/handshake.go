package rendezvous

// The request head of a WebSocket upgrade, parsed by hand for Serve's own
// accept loop (issue 13: net/http's per-connection machinery was close to
// half of the server's CPU in a burst of connects). parseUpgrade takes
// only a request that net/http would route to serveWebSocket unchanged and
// that gorilla's Upgrader would accept with the key it returns, and
// declines everything else, which net/http then reads as before
// (accept.go). Declining is always correct; the tests check that what is
// taken here, gorilla takes too, and answers alike (TestFastUpgradeAnswer,
// FuzzParseUpgrade).

import (
	"bytes"
	"encoding/base64"
)

// maxHead bounds the request head the fast path reads: a client library's
// upgrade request is a few hundred bytes. A longer head is declined.
const maxHead = 4 << 10

// upgradeRequest is what the fast path needs of an upgrade request. Its
// slices alias the head.
type upgradeRequest struct {
	key []byte // Sec-WebSocket-Key: base64 of 16 bytes
	xff []byte // the last X-Forwarded-For value; nil without one
	// Headers gorilla ignores while the Upgrader negotiates no
	// subprotocol and no compression (the fast path checks it does not).
	protocol, extensions bool
}

// parseUpgrade parses head, a request head through its blank line, and
// reports whether the fast path may answer it. That takes all of:
//
//   - the request line GET, an origin-form target, HTTP/1.1, where the
//     target is a clean path (ServeMux redirects others) of a restricted
//     set of bytes (no %-escapes), other than /healthz and /metrics;
//   - header lines name ":" value CRLF, the name a token and the value
//     visible ASCII, space, tab or obs-text (no obs-fold, no bare LF);
//   - exactly one Host, of a restricted set of bytes, and exactly one
//     Sec-WebSocket-Key, base64 of 16 bytes;
//   - "upgrade" in Connection, "websocket" in Upgrade and "13" in
//     Sec-WebSocket-Version, as token lists (gorilla's
//     tokenListContainsValue);
//   - no body (no Transfer-Encoding, Content-Length only as 0) and no
//     Expect, which net/http answers itself.
//
// Header names compare without case, as net/http's canonical keys do, and
// values without the spaces and tabs around them, as net/http trims them.
func parseUpgrade(head []byte) (req upgradeRequest, ok bool) {
	line, rest, ok := cutLine(head)
	if !ok {
		return req, false
	}
	const method, proto = "GET ", " HTTP/1.1"
	if !bytes.HasPrefix(line, []byte(method)) || !bytes.HasSuffix(line, []byte(proto)) ||
		len(line) < len(method)+len(proto) || !fastTarget(line[len(method):len(line)-len(proto)]) {
		return req, false
	}
	var hosts, keys int
	var connection, upgrade, version bool
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return req, false
		}
		if len(line) == 0 {
			break // the blank line
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return req, false
		}
		name, value := line[:colon], trimSpace(line[colon+1:])
		for _, c := range name {
			if !isToken(c) {
				return req, false // obs-fold, a space before the colon, ...
			}
		}
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return req, false
			}
		}
		switch {
		case equalFold(name, "Host"):
			hosts++
			if !fastHost(value) {
				return req, false
			}
		case equalFold(name, "Connection"):
			connection = connection || hasToken(value, "upgrade")
		case equalFold(name, "Upgrade"):
			upgrade = upgrade || hasToken(value, "websocket")
		case equalFold(name, "Sec-WebSocket-Version"):
			version = version || hasToken(value, "13")
		case equalFold(name, "Sec-WebSocket-Key"):
			keys++
			req.key = value
		case equalFold(name, "Sec-WebSocket-Protocol"):
			req.protocol = true
		case equalFold(name, "Sec-WebSocket-Extensions"):
			req.extensions = true
		case equalFold(name, "X-Forwarded-For"):
			req.xff = value
		case equalFold(name, "Content-Length"):
			if string(value) != "0" {
				return req, false
			}
		case equalFold(name, "Transfer-Encoding"), equalFold(name, "Expect"):
			return req, false
		}
	}
	if len(rest) != 0 || hosts != 1 || keys != 1 || !connection || !upgrade || !version || !validKey(req.key) {
		return req, false
	}
	return req, true
}

// cutLine cuts head at its first CRLF. ok is false without one, or when
// the line holds a CR or LF of its own.
func cutLine(head []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(head, '\n')
	if i < 1 || head[i-1] != '\r' {
		return nil, nil, false
	}
	line = head[:i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, nil, false
	}
	return line, head[i+1:], true
}

// fastTarget reports whether t is a request target that net/http parses
// as it is and ServeMux routes to serveWebSocket as it is: an absolute
// path, clean (no empty, "." or ".." segment), of unreserved and
// sub-delimiter bytes and ":@" only, with an optional query of the same
// and "/?", and not /healthz or /metrics.
func fastTarget(t []byte) bool {
	path := t
	if i := bytes.IndexByte(t, '?'); i >= 0 {
		path = t[:i]
		for _, c := range t[i+1:] {
			if !isPathByte(c) && c != '?' {
				return false
			}
		}
	}
	if len(path) == 0 || path[0] != '/' {
		return false
	}
	for _, c := range path {
		if !isPathByte(c) {
			return false
		}
	}
	// Every segment but the last may not be empty ("//"), and none may
	// be "." or "..".
	for seg := range bytes.SplitSeq(path[1:], []byte("/")) {
		if string(seg) == "." || string(seg) == ".." {
			return false
		}
	}
	if bytes.Contains(path, []byte("//")) {
		return false
	}
	return string(path) != "/healthz" && string(path) != "/metrics"
}

// isPathByte reports whether c may stand in a path as it is: ALPHA,
// DIGIT, "-._~", the sub-delimiters "!$&'()*+,;=", ":@" and "/".
func isPathByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@', '/':
		return true
	}
	return false
}

// fastHost reports whether h is a non-empty Host of ALPHA, DIGIT and
// "-._~:[]" only (a subset of what net/http accepts).
func fastHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, c := range h {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

// validKey reports what gorilla's isValidChallengeKey does: k decodes
// from standard, padded base64 to 16 bytes (24 bytes of text). k holds no
// CR or LF, which the decoder would skip.
func validKey(k []byte) bool {
	var dst [18]byte // base64.StdEncoding.DecodedLen(24)
	if len(k) != 24 {
		return false
	}
	n, err := base64.StdEncoding.Decode(dst[:], k)
	return err == nil && n == 16
}

// hasToken reports whether the comma-separated token list v holds want,
// compared without ASCII case, exactly as gorilla's tokenListContainsValue
// reads one header value: a malformed element ends the list.
func hasToken(v []byte, want string) bool {
	for {
		v = skipSpaceTab(v)
		i := 0
		for i < len(v) && isToken(v[i]) {
			i++
		}
		t, rest := v[:i], skipSpaceTab(v[i:])
		if len(t) == 0 || len(rest) != 0 && rest[0] != ',' {
			return false
		}
		if equalFold(t, want) {
			return true
		}
		if len(rest) == 0 {
			return false
		}
		v = rest[1:]
	}
}

func skipSpaceTab(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// trimSpace trims spaces and tabs at both ends, as net/textproto does a
// header value.
func trimSpace(b []byte) []byte {
	b = skipSpaceTab(b)
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold reports whether b equals s with ASCII case folded.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// isToken reports whether c is a token byte (RFC 9110 tchar).
func isToken(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
