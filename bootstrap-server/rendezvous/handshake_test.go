package rendezvous

import (
	"strings"
	"testing"
)

// upgradeHead is gorilla's Dialer's request with the given lines in place
// of its usual headers (each "Name: value", joined with CRLF).
func upgradeHead(target string, lines ...string) string {
	return "GET " + target + " HTTP/1.1\r\n" + strings.Join(lines, "\r\n") + "\r\n\r\n"
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

// The headers of gorilla's Dialer's request, which the tests vary.
var stdLines = []string{
	"Host: 10.0.0.1:8080", "User-Agent: Go-http-client/1.1", "Connection: Upgrade",
	"Sec-WebSocket-Key: " + testKey, "Sec-WebSocket-Version: 13", "Upgrade: websocket",
}

// without returns stdLines without the header named name, plus more.
func without(name string, more ...string) []string {
	var ls []string
	for _, l := range stdLines {
		if !strings.HasPrefix(l, name+":") {
			ls = append(ls, l)
		}
	}
	return append(ls, more...)
}

func with(more ...string) []string { return append(append([]string(nil), stdLines...), more...) }

// The upgrades parseUpgrade takes; each is also checked against net/http
// and gorilla (TestFastUpgradeAnswer) and seeds FuzzParseUpgrade.
var fastHeads = []struct {
	name, head string
	xff        string
}{
	{"gorilla's dialer", upgradeHead("/", stdLines...), ""},
	{"names in any case, tokens in any case, in lists", upgradeHead("/",
		"host: example.org", "CONNECTION: keep-alive, UPGRADE", "upgrade: WebSocket, h2c",
		"sec-websocket-key: "+testKey, "SEC-WEBSOCKET-VERSION: 8, 13"), ""},
	{"the token in a second Connection header", upgradeHead("/", without("Connection", "Connection: keep-alive", "Connection: upgrade")...), ""},
	{"spaces and tabs around values", upgradeHead("/", without("Sec-WebSocket-Key", "Sec-WebSocket-Key: \t "+testKey+" \t")...), ""},
	{"a subprotocol and extensions, which gorilla ignores here", upgradeHead("/",
		with("Sec-WebSocket-Protocol: chat", "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")...), ""},
	{"a browser's headers", upgradeHead("/ws?room=a/b?c",
		with("Origin: https://example.org", "Cookie: a=b; c=d", "Accept-Language: de-CH, de;q=0.9", "Pragma: no-cache")...), ""},
	{"obs-text in a value", upgradeHead("/", with("User-Agent: caf\xc3\xa9/1.0")...), ""},
	{"Content-Length 0", upgradeHead("/", with("Content-Length: 0")...), ""},
	{"a clean path with sub-delimiters", upgradeHead("/a/b-c_d.e~f/!$&'()*+,;=:@/", stdLines...), ""},
	{"an IPv6 host", upgradeHead("/", without("Host", "Host: [2001:db8::1]:8080")...), ""},
	{"the last X-Forwarded-For counts", upgradeHead("/", with("X-Forwarded-For: 192.0.2.1", "x-forwarded-for:  198.51.100.7, 203.0.113.9 ")...), "198.51.100.7, 203.0.113.9"},
	{"a key with trailing bits set", upgradeHead("/", without("Sec-WebSocket-Key", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAB==")...), ""},
}

func TestParseUpgradeTakes(t *testing.T) {
	for _, tc := range fastHeads {
		t.Run(tc.name, func(t *testing.T) {
			req, ok := parseUpgrade([]byte(tc.head))
			if !ok {
				t.Fatalf("declined %q", tc.head)
			}
			wantKey := testKey
			if strings.Contains(tc.head, "AAAAB==") {
				wantKey = "AAAAAAAAAAAAAAAAAAAAAB=="
			}
			if string(req.key) != wantKey || string(req.xff) != tc.xff {
				t.Fatalf("key %q, xff %q; want %q, %q", req.key, req.xff, wantKey, tc.xff)
			}
		})
	}
}

// The heads parseUpgrade declines, one reason each. What net/http and
// gorilla make of some of them is checked in TestDeclinedAnsweredByNetHTTP.
var declinedHeads = []struct{ name, head string }{
	{"POST", strings.Replace(upgradeHead("/", stdLines...), "GET", "POST", 1)},
	{"a method in lower case", strings.Replace(upgradeHead("/", stdLines...), "GET", "get", 1)},
	{"HTTP/1.0", strings.Replace(upgradeHead("/", stdLines...), "HTTP/1.1", "HTTP/1.0", 1)},
	{"two spaces in the request line", upgradeHead(" /", stdLines...)},
	{"an absolute-form target", upgradeHead("http://10.0.0.1:8080/", stdLines...)},
	{"an asterisk target", upgradeHead("*", stdLines...)},
	{"a %-escape", upgradeHead("/%61", stdLines...)},
	{"a fragment", upgradeHead("/#a", stdLines...)},
	{"a double slash", upgradeHead("//a", stdLines...)},
	{"a dot segment", upgradeHead("/a/./b", stdLines...)},
	{"a trailing dot-dot segment", upgradeHead("/a/..", stdLines...)},
	{"/healthz", upgradeHead("/healthz", stdLines...)},
	{"/metrics with a query", upgradeHead("/metrics?x", stdLines...)},
	{"a non-ASCII path", upgradeHead("/caf\xc3\xa9", stdLines...)},
	{"no Host", upgradeHead("/", without("Host")...)},
	{"two Hosts", upgradeHead("/", with("Host: b")...)},
	{"an empty Host", upgradeHead("/", without("Host", "Host:")...)},
	{"a Host with a comma", upgradeHead("/", without("Host", "Host: a,b")...)},
	{"no upgrade token in Connection", upgradeHead("/", without("Connection", "Connection: keep-alive")...)},
	{"a longer token in Connection", upgradeHead("/", without("Connection", "Connection: upgrades")...)},
	{"a malformed list before the token", upgradeHead("/", without("Connection", "Connection: keep alive, upgrade")...)},
	{"no Upgrade", upgradeHead("/", without("Upgrade")...)},
	{"Upgrade h2c", upgradeHead("/", without("Upgrade", "Upgrade: h2c")...)},
	{"version 8", upgradeHead("/", without("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8")...)},
	{"no key", upgradeHead("/", without("Sec-WebSocket-Key")...)},
	{"two keys", upgradeHead("/", with("Sec-WebSocket-Key: "+testKey)...)},
	{"a key of 15 bytes", upgradeHead("/", without("Sec-WebSocket-Key", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA")...)},
	{"a key of 17 bytes", upgradeHead("/", without("Sec-WebSocket-Key", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=")...)},
	{"a key without padding", upgradeHead("/", without("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ")...)},
	{"a key in URL-safe base64", upgradeHead("/", without("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZ-_=")...)},
	{"an obs-fold", upgradeHead("/", with("X-Long: a", " b")...)},
	{"an obs-fold first", upgradeHead("/", append([]string{" X: a"}, stdLines...)...)},
	{"a bare LF", strings.Replace(upgradeHead("/", stdLines...), "User-Agent: Go-http-client/1.1\r\n", "User-Agent: Go-http-client/1.1\n", 1)},
	{"a CR in a value", upgradeHead("/", with("X-A: a\rb")...)},
	{"a NUL in a value", upgradeHead("/", with("X-A: a\x00b")...)},
	{"a DEL in a value", upgradeHead("/", with("X-A: a\x7fb")...)},
	{"a space before the colon", upgradeHead("/", with("X-A : a")...)},
	{"an empty name", upgradeHead("/", with(": a")...)},
	{"a line without a colon", upgradeHead("/", with("X-A")...)},
	{"a separator in a name", upgradeHead("/", with("X(A): a")...)},
	{"Transfer-Encoding", upgradeHead("/", with("Transfer-Encoding: chunked")...)},
	{"a Content-Length", upgradeHead("/", with("Content-Length: 5")...)},
	{"Expect", upgradeHead("/", with("Expect: 100-continue")...)},
	{"bytes after the head", upgradeHead("/", stdLines...) + "x"},
	{"no blank line", strings.TrimSuffix(upgradeHead("/", stdLines...), "\r\n")},
	{"an empty head", ""},
}

func TestParseUpgradeDeclines(t *testing.T) {
	for _, tc := range declinedHeads {
		t.Run(tc.name, func(t *testing.T) {
			if _, ok := parseUpgrade([]byte(tc.head)); ok {
				t.Fatalf("took %q", tc.head)
			}
		})
	}
}

func TestHasTokenAsGorilla(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want bool
	}{
		{"upgrade", true},
		{"Upgrade", true},
		{" keep-alive ,\tUPGRADE ", true},
		{"keep-alive,,upgrade", false}, // gorilla stops at the empty element
		{"keep alive, upgrade", false}, // and at a malformed one
		{"upgrade;q=1", false},
		{"upgrade ,", true},
		{"", false},
		{"upgrad", false},
		{"\"upgrade\"", false},
	} {
		if got := hasToken([]byte(tc.v), "upgrade"); got != tc.want {
			t.Errorf("hasToken(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

// FuzzParseUpgrade: parseUpgrade never panics, and whatever it takes,
// net/http routes to serveWebSocket and gorilla upgrades, with the key
// parseUpgrade found; and the fast path's answer is byte for byte the one
// net/http and gorilla give.
func FuzzParseUpgrade(f *testing.F) {
	for _, tc := range fastHeads {
		f.Add([]byte(tc.head))
	}
	for _, tc := range declinedHeads {
		f.Add([]byte(tc.head))
	}
	p := newBothPaths(f, Config{MaxConnsPerIP: -1})
	f.Fuzz(func(t *testing.T, head []byte) {
		req, ok := parseUpgrade(head)
		if !ok {
			return
		}
		key := string(req.key)
		viaHTTP := p.exchange(t, p.slow, string(head))
		want := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey(key) + "\r\n\r\n"
		if viaHTTP != want {
			t.Fatalf("parseUpgrade took %q (key %q), but net/http and gorilla answer %q", head, key, viaHTTP)
		}
		if viaFast := p.exchange(t, p.fast, string(head)); viaFast != viaHTTP {
			t.Fatalf("%q: fast path answers %q, net/http %q", head, viaFast, viaHTTP)
		}
	})
}
