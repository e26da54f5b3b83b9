package cli

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/internal/display"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// run runs the program with args and no network: anything that gets as
// far as starting a node fails with exit status 1.
func run(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	if env["HOME"] == "" && env["XDG_DATA_HOME"] == "" {
		// The profile (identity key, known peers) lives in a fresh home.
		env = maps.Clone(env)
		if env == nil {
			env = map[string]string{}
		}
		env["HOME"] = t.TempDir()
	}
	code = RunEnv(t.Context(), args, Env{
		Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb,
		Getenv: func(k string) string { return env[k] },
	})
	return code, out.String(), errb.String()
}

func TestVersionAndHelp(t *testing.T) {
	for _, arg := range []string{"-V", "--version"} {
		code, out, _ := run(t, nil, arg)
		if code != 0 || out != "parlance "+Version+"\n" {
			t.Errorf("%s: %d %q", arg, code, out)
		}
	}
	for _, arg := range []string{"-h", "--help"} {
		code, out, _ := run(t, nil, arg)
		if code != 0 || !strings.Contains(out, "--nickname <NICKNAME>") || !strings.Contains(out, "--interface") {
			t.Errorf("%s: %d %q", arg, code, out)
		}
	}
}

// Nickname errors: the original's texts, exit status 2.
func TestNicknameErrors(t *testing.T) {
	tests := []struct{ name, nick, want string }{
		{"empty", "", "Nickname cannot be empty"},
		{"too long", strings.Repeat("x", 33), "Nickname cannot be longer than 32 bytes"},
		{"only whitespace", "   ", "Nickname cannot be only whitespace"},
		{"leading whitespace", " bob", "Nickname cannot start or end with whitespace"},
		{"control character", "bo\x07b", "Nickname cannot contain control characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(t, nil, "-n", tt.nick)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("got %d %q, want 2 and %q", code, stderr, tt.want)
			}
		})
	}
	code, _, stderr := run(t, nil)
	if code != 2 || !strings.Contains(stderr, "the following required arguments were not provided") {
		t.Errorf("no nickname: %d %q", code, stderr)
	}
}

func TestFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-n", "a", "-m", "lan"}, `--mode must be "local" or "internet", got "lan"`},
		{[]string{"-n", "a", "--bootstrap-server", "localhost:8080"}, `--bootstrap-server must be a ws:// or wss:// URL`},
		{[]string{"-n", "a", "--bootstrap-server", "ws://a,http://b,ws://c"}, `--bootstrap-server must be a ws:// or wss:// URL with a host, got "http://b"`},
		{[]string{"-n", "a", "--bootstrap-server", "ws://a", "--bootstrap-server", "ws://"}, `--bootstrap-server must be a ws:// or wss:// URL with a host, got "ws://"`},
		{[]string{"-n", "a", "--bootstrap-server", "ws://a,,ws://c"}, `--bootstrap-server must be a ws:// or wss:// URL with a host, got ""`},
		{[]string{"-n", "a", "--bootstrap-server", ""}, `--bootstrap-server must be a ws:// or wss:// URL with a host, got ""`},
		{[]string{"-n", "a", "--log-level", "loud"}, `--log-level must be one of "debug", "info", "warn", "error", got "loud"`},
		{[]string{"-n", "a", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"-n", "a", "extra"}, `unexpected argument "extra"`},
		{[]string{"-n", "a", "-i", "nosuchif0"}, `interface "nosuchif0" not found`},
	}
	for _, tt := range tests {
		code, _, stderr := run(t, nil, tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) {
			t.Errorf("%q: got %d %q, want 2 and %q", tt.args, code, stderr, tt.want)
		}
	}
}

// A bad config file stops the program with one line and status 2; an
// unknown key only warns.
func TestConfigErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[network]\nmode = \"lan\"\n"), 0o644)
	code, _, stderr := run(t, nil, "-n", "alice", "-c", bad)
	want := fmt.Sprintf("parlance: config %s:2: network.mode must be \"local\" or \"internet\", got \"lan\"\n", bad)
	if code != 2 || stderr != want {
		t.Errorf("got %d %q\nwant 2 %q", code, stderr, want)
	}
	code, _, stderr = run(t, nil, "-n", "alice", "-c", filepath.Join(dir, "none.toml"))
	if code != 2 || !strings.Contains(stderr, "none.toml: cannot be read") {
		t.Errorf("missing file: %d %q", code, stderr)
	}
	unknown := filepath.Join(dir, "unknown.toml")
	os.WriteFile(unknown, []byte("[peer]\nanounce_interval_secs = 3\n"), 0o644)
	code, _, stderr = run(t, nil, "-n", "alice", "-c", unknown)
	if !strings.Contains(stderr, "parlance: warning: config "+unknown+":2: peer.anounce_interval_secs is not a known key") {
		t.Errorf("unknown key: %q", stderr)
	}
	if code != 1 || !strings.Contains(stderr, "Config.Network is required") {
		t.Errorf("with no network the node must fail to start: %d %q", code, stderr)
	}
}

// Flags override the file, which overrides the defaults.
func TestFlagsOverrideFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.toml")
	os.WriteFile(file, []byte("[network]\nmode = \"internet\"\nbootstrap_server = \"ws://file:1\"\ninterface = \"eth9\"\n[log]\nlevel = \"info\"\n"), 0o644)
	resolveArgs := func(args ...string) Settings {
		t.Helper()
		o, err := parseFlags(args, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := resolve(o, Env{Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := resolveArgs("-n", "a", "-c", file)
	if n := s.Config.Network; n.Mode != "internet" || !slices.Equal(n.BootstrapServers, []string{"ws://file:1"}) || n.Interface != "eth9" || s.Config.Log.Level != "info" {
		t.Errorf("file values not used: %+v", s.Config)
	}
	s = resolveArgs("-n", "a", "--config", file, "-m", "local", "--bootstrap-server", "wss://flag:2", "--interface", "lo", "--log-level", "error", "--log-file", "/tmp/x.log")
	if n := s.Config.Network; n.Mode != "local" || !slices.Equal(n.BootstrapServers, []string{"wss://flag:2"}) || n.Interface != "lo" || s.Config.Log.Level != "error" || s.Config.Log.File != "/tmp/x.log" {
		t.Errorf("flags did not override: %+v", s.Config)
	}
	if s.ConfigFile != file {
		t.Errorf("config file %q, want %q", s.ConfigFile, file)
	}
}

// --bootstrap-server may be repeated and may list several URLs separated
// by commas, in order; the flags replace the file's whole list.
func TestBootstrapServerFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "p.toml")
	os.WriteFile(file, []byte("[network]\nbootstrap_servers = [\"ws://file:1\", \"ws://file:2\"]\n"), 0o644)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"none: the default", nil, []string{"ws://localhost:8080"}},
		{"none: the file's list", []string{"-c", file}, []string{"ws://file:1", "ws://file:2"}},
		{"one", []string{"--bootstrap-server", "ws://a"}, []string{"ws://a"}},
		{"comma-separated", []string{"--bootstrap-server", "ws://a,wss://b:443/x"}, []string{"ws://a", "wss://b:443/x"}},
		{"spaces after commas", []string{"--bootstrap-server", "ws://a, ws://b"}, []string{"ws://a", "ws://b"}},
		{"repeated", []string{"--bootstrap-server", "ws://a", "--bootstrap-server=ws://b"}, []string{"ws://a", "ws://b"}},
		{"both, in order", []string{"--bootstrap-server", "ws://a,ws://b", "--bootstrap-server", "ws://c"}, []string{"ws://a", "ws://b", "ws://c"}},
		{"over the file's list", []string{"-c", file, "--bootstrap-server", "ws://c"}, []string{"ws://c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(append([]string{"-n", "a"}, tt.args...), nil)
			if err != nil {
				t.Fatal(err)
			}
			s, err := resolve(o, Env{Stderr: &bytes.Buffer{}, Getenv: func(string) string { return "" }})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Config.Network.BootstrapServers; !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// --generate-config needs no nickname and writes a file that loads to the
// defaults.
func TestGenerateConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gen.toml")
	code, out, stderr := run(t, nil, "--generate-config", path)
	if code != 0 || !strings.Contains(out, path) {
		t.Fatalf("%d %q %q", code, out, stderr)
	}
	code, _, stderr = run(t, nil, "--generate-config", path)
	if code == 0 || !strings.Contains(stderr, "already exists") {
		t.Errorf("overwrite: %d %q", code, stderr)
	}
}

func TestHistoryPath(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	if got := historyPath(env(map[string]string{"XDG_STATE_HOME": "/s", "HOME": "/h"})); got != "/s/parlance/history" {
		t.Error(got)
	}
	if got := historyPath(env(map[string]string{"HOME": "/h"})); got != "/h/.local/state/parlance/history" {
		t.Error(got)
	}
}

func peer(nick, addr, instance string, ago time.Duration, now time.Time) registry.Peer {
	return registry.Peer{Nickname: nick, Addr: netip.MustParseAddrPort(addr), Instance: instance, Source: registry.SourceLAN, LastSeen: now.Add(-ago)}
}

func TestFormatPeers(t *testing.T) {
	now := time.Unix(1000, 0)
	if got := formatPeers(nil, now); got != "No peers discovered yet." {
		t.Error(got)
	}
	key := protocol.EncodePublicKey(ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey))
	fp := protocol.KeyFingerprint(key)
	st := func(p registry.Peer, state trust.State, withKey bool) chat.PeerStatus {
		ps := chat.PeerStatus{Peer: p, Trust: state}
		if withKey {
			ps.PubKey, ps.Fingerprint = key, fp
		}
		return ps
	}
	got := formatPeers([]chat.PeerStatus{
		st(peer("alice", "10.0.0.1:4000", "aa", 2*time.Second, now), trust.StateVerified, true),
		func() chat.PeerStatus {
			ps := st(peer("bob", "10.0.0.2:4000", "bb", 0, now), trust.StateChanged, true)
			ps.Source, ps.Path = registry.SourceBootstrap, chat.PathRelayed
			return ps
		}(),
		st(peer("bob", "10.0.0.3:4000", "", 4*time.Second, now), trust.StateUnencrypted, false),
		st(peer("e\x1bvil", "10.0.0.4:4000", "cc", 0, now), trust.StateNew, true),
	}, now)
	want := `4 peer(s):
  alice              ` + fp[:7] + `  verified     10.0.0.1:4000  lan                   2s ago
  bob@10.0.0.2:4000  ` + fp[:7] + `  KEY CHANGED  10.0.0.2:4000  bootstrap, relayed    0s ago
  bob@10.0.0.3:4000  -        unencrypted  10.0.0.3:4000  lan, original client  4s ago
  e\x1bvil           ` + fp[:7] + `  new          10.0.0.4:4000  lan                   0s ago`
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// A received message's mark keeps the "nick: text" shape.
func TestMessageMark(t *testing.T) {
	tests := []struct {
		name string
		m    chat.Message
		want string
	}{
		{"encrypted, pinned key", chat.Message{Encrypted: true, Trust: trust.StateKnown}, ""},
		{"encrypted, first session", chat.Message{Encrypted: true, Trust: trust.StateNew}, ""},
		{"plaintext", chat.Message{Trust: trust.StateUnencrypted}, "(plain)"},
		{"encrypted, another key than pinned", chat.Message{Encrypted: true, Trust: trust.StateChanged}, "(KEY CHANGED)"},
		{"plaintext with an invalid name", chat.Message{InvalidFrom: true}, "(plain, invalid name)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := messageMark(tt.m); got != tt.want {
				t.Errorf("mark %q, want %q", got, tt.want)
			}
		})
	}
	line := display.MarkedMessageLine(time.Unix(0, 0), time.UTC, messageMark(chat.Message{InvalidFrom: true}), "ali\x1bce", "hi")
	if want := `[00:00:00] (plain, invalid name) ali\x1bce: hi`; line != want {
		t.Errorf("line %q, want %q", line, want)
	}
}

func TestSendOutcome(t *testing.T) {
	now := time.Now()
	b1, b2 := peer("bob", "10.0.0.2:1", "a", 0, now), peer("bob", "10.0.0.3:1", "b", 0, now)
	tests := []struct {
		res  chat.SendResult
		err  error
		want string
	}{
		{chat.SendResult{Peer: b1, Status: chat.Delivered}, nil, "Delivered to bob."},
		{chat.SendResult{Peer: b1, Status: chat.Sent}, nil, "Sent to bob (an original client: it cannot confirm delivery)."},
		{chat.SendResult{Peer: b1, Status: chat.Queued}, nil, "Queued for bob: will be delivered when bob is back."},
		{chat.SendResult{Peer: b1, Status: chat.Queued}, chat.ErrExpired, "Expired: the message to bob waited its whole time in the queue and will not be sent."},
		{chat.SendResult{}, fmt.Errorf("message to bob not stored: %w", store.ErrDiskFull), "Not sent to bob: message to bob not stored: " + store.ErrDiskFull.Error() + "."},
		{chat.SendResult{}, &registry.AmbiguousError{Name: "bob", Candidates: []registry.Peer{b1, b2}},
			"Not sent: 2 peers are called bob: bob@10.0.0.2:1, bob@10.0.0.3:1. Pick one, e.g. /send bob@10.0.0.2:1 <message>"},
		{chat.SendResult{}, fmt.Errorf("%w: bob", registry.ErrUnknownPeer), "Not sent: no peer called bob. /peers lists the peers found."},
		{chat.SendResult{}, fmt.Errorf("connect x: %w: boom", chat.ErrRefused), "Not sent to bob: connection refused; the peer may have quit."},
		{chat.SendResult{}, fmt.Errorf("send x: %w: no ack", chat.ErrTimeout), "Not confirmed by bob: timed out (send x: chat: timed out: no ack); the message may not have arrived."},
		{chat.SendResult{}, fmt.Errorf("send x: %w: EOF", chat.ErrBroken), "Not confirmed by bob: the connection was lost (send x: chat: connection lost: EOF); the message may not have arrived."},
		{chat.SendResult{}, fmt.Errorf("%w: bob is pinned to key AAAAAAA", chat.ErrKeyChanged), "Not sent to bob: key changed: bob is pinned to key AAAAAAA."},
		{chat.SendResult{}, fmt.Errorf("%w: not sending it plaintext", chat.ErrDowngrade), "Not sent to bob: peer announces no key, but its nickname is pinned to one: not sending it plaintext."},
		{chat.SendResult{}, errors.New("weird"), "Not sent to bob: weird."},
	}
	for _, tt := range tests {
		if got := sendOutcome("bob", tt.res, tt.err); got != tt.want {
			t.Errorf("got  %q\nwant %q", got, tt.want)
		}
	}
}

func TestStoredMessageLines(t *testing.T) {
	loc := time.FixedZone("X", 3600)
	at := time.Date(2026, 12, 3, 9, 41, 2, 0, time.UTC)
	out := store.Message{Seq: 1, PeerNick: "bob", Dir: store.Out, Text: "are you back?\x1b[2J", Sent: at, Status: store.Delivered, Encrypted: true}
	queued := out
	queued.Status, queued.Text = store.Pending, "later"
	in := store.Message{Seq: 2, PeerNick: "b\u202eob", Dir: store.In, Text: "yes", Sent: at, Received: at.Add(time.Second), Status: store.Received}
	if got, want := historyText("bob", []store.Message{out, queued, in}, nil, loc), `Last 3 message(s) with bob:
  -- 2026-12-03 --
  [10:41:02] you → bob: are you back?\x1b[2J
  [10:41:02] (queued) you → bob: later
  [10:41:03] (plain) b\u202eob: yes`; got != want {
		t.Errorf("history:\n%s\nwant\n%s", got, want)
	}
	if got, want := deliveredLine(out, loc), `Delivered to bob: "are you back?\x1b[2J" (queued 2026-12-03 10:41:02).`; got != want {
		t.Errorf("delivered: %q, want %q", got, want)
	}
	if got, want := expiredLine(queued, loc), `Expired: your message to bob of 2026-12-03 10:41:02, "later", was not delivered in time and will not be sent.`; got != want {
		t.Errorf("expired: %q, want %q", got, want)
	}
	sum := []store.PeerQueue{{PeerKey: "k1", PeerNick: "bob", Count: 2}, {PeerKey: "k2", PeerNick: "carol", Count: 1}}
	if got, want := queueSummaryLine(sum), "3 message(s) queued: 2 for bob, 1 for carol. They go out when those peers are back; /queue lists them."; got != want {
		t.Errorf("summary: %q, want %q", got, want)
	}
	if got := queueSummaryLine(nil); got != "" {
		t.Errorf("empty summary: %q", got)
	}
	if got := historyText("bob", nil, nil, loc); got != "No messages with bob yet." {
		t.Errorf("empty history: %q", got)
	}
	if got := searchText("x", nil, nil, loc); got != "No stored message has x." {
		t.Errorf("empty search: %q", got)
	}
}
