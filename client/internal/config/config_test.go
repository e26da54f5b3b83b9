package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDefaultsAndTemplate(t *testing.T) {
	c, w, err := Parse("t.toml", []byte(Template))
	if err != nil || len(w) != 0 {
		t.Fatalf("template: %v %v", w, err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("template gives %+v, want the defaults %+v", c, Default())
	}
	c, _, _ = Parse("empty.toml", nil)
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("empty file gives %+v", c)
	}
}

func TestParseValues(t *testing.T) {
	c, _, err := Parse("p.toml", []byte(`
[network]
mode = "internet"
bootstrap_server = "wss://chat.example:443/x"
interface = "eth1"
[discovery]
heartbeat_interval_secs = 20
peer_timeout_secs = 60
[peer]
announce_interval_secs = 2
timeout_secs = 7
[log]
file = "/tmp/p.log"
level = "debug"
[profile]
data_dir = "/srv/parlance"
identity_file = "/keys/alice"
[security]
require_encryption = true
[messages]
queue_ttl_days = 30
[rooms]
history_messages = 2000
history_days = 30
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Network:   Network{Mode: "internet", BootstrapServers: []string{"wss://chat.example:443/x"}, Interface: "eth1"},
		Discovery: Discovery{HeartbeatIntervalSecs: 20, PeerTimeoutSecs: 60},
		Peer:      Peer{AnnounceIntervalSecs: 2, TimeoutSecs: 7},
		Log:       Log{File: "/tmp/p.log", Level: "debug"},
		Profile:   Profile{DataDir: "/srv/parlance", IdentityFile: "/keys/alice"},
		Security:  Security{RequireEncryption: true},
		Messages:  Messages{QueueTTLDays: 30},
		Rooms:     Rooms{HistoryMessages: 2000, HistoryDays: 30},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
}

// bootstrap_servers lists one server or several, in order; the older
// bootstrap_server names one.
func TestBootstrapServerLists(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"the default", "", []string{"ws://localhost:8080"}},
		{"one with the old key", "[network]\nbootstrap_server = \"wss://a.example\"\n", []string{"wss://a.example"}},
		{"one in a list", "[network]\nbootstrap_servers = [\"ws://a:8080\"]\n", []string{"ws://a:8080"}},
		{"several in order", "[network]\nbootstrap_servers = [\"ws://a:8080\", \"wss://b\", \"ws://c/x\"]\n", []string{"ws://a:8080", "wss://b", "ws://c/x"}},
		{"over several lines", "[network]\nbootstrap_servers = [\n  \"ws://a:8080\",\n  \"wss://b\", # the spare\n]\n", []string{"ws://a:8080", "wss://b"}},
		{"as a dotted key", "network.bootstrap_servers = [\"wss://b\", \"ws://a\"]\n", []string{"wss://b", "ws://a"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, w, err := Parse("p.toml", []byte(tt.doc))
			if err != nil || len(w) != 0 {
				t.Fatalf("%v %v", w, err)
			}
			if got := c.Network.BootstrapServers; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// Every error names the file, the line, the key and what is allowed.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"mode with wrong case", "[network]\nmode = \"Internet\"\n", `p.toml:2: network.mode must be "local" or "internet", got "Internet"`},
		{"mode not a string", "[network]\n\nmode = 5\n", `p.toml:3: network.mode must be "local" or "internet", got 5`},
		{"bootstrap server not a websocket URL", "[network]\nbootstrap_server = \"http://x\"\n", `p.toml:2: network.bootstrap_server must be a ws:// or wss:// URL with a host, got "http://x"`},
		{"bootstrap server without host", "[network]\nbootstrap_server = \"ws://\"\n", `p.toml:2: network.bootstrap_server must be a ws:// or wss:// URL with a host, got "ws://"`},
		{"bootstrap server a list", "[network]\nbootstrap_server = [\"ws://a\"]\n", `p.toml:2: network.bootstrap_server must be a ws:// or wss:// URL with a host, got an array`},
		{"bootstrap servers a string", "[network]\nbootstrap_servers = \"ws://a\"\n", `p.toml:2: network.bootstrap_servers must be an array of ws:// or wss:// URLs, got "ws://a"`},
		{"bootstrap servers empty", "[network]\nbootstrap_servers = []\n", `p.toml:2: network.bootstrap_servers must list at least one ws:// or wss:// URL, got []`},
		{"bad URL in the middle of the list", "[network]\nbootstrap_servers = [\"ws://a\", \"http://b\", \"ws://c\"]\n", `p.toml:2: network.bootstrap_servers[1] must be a ws:// or wss:// URL with a host, got "http://b"`},
		{"bad URL on its own line", "[network]\nbootstrap_servers = [\n  \"ws://a\",\n  \"ws://\",\n]\n", `p.toml:4: network.bootstrap_servers[1] must be a ws:// or wss:// URL with a host, got "ws://"`},
		{"a number in the list", "[network]\nbootstrap_servers = [\"ws://a\", 8080]\n", `p.toml:2: network.bootstrap_servers[1] must be a ws:// or wss:// URL with a host, got 8080`},
		{"a list in the list", "[network]\nbootstrap_servers = [[\"ws://a\"]]\n", `p.toml:2: network.bootstrap_servers[0] must be a ws:// or wss:// URL with a host, got an array`},
		{"both keys, the list last", "[network]\nbootstrap_server = \"ws://a\"\nbootstrap_servers = [\"ws://b\"]\n", `p.toml:3: network.bootstrap_servers cannot be set together with network.bootstrap_server (line 2): use network.bootstrap_servers alone, it takes one URL or several`},
		{"both keys, the list first", "[network]\nbootstrap_servers = [\"ws://b\"]\n\nbootstrap_server = \"ws://a\"\n", `p.toml:4: network.bootstrap_server cannot be set together with network.bootstrap_servers (line 2): use network.bootstrap_servers alone, it takes one URL or several`},
		{"interface not a string", "[network]\ninterface = 1\n", `p.toml:2: network.interface must be a string, got 1`},
		{"interval zero", "[peer]\nannounce_interval_secs = 0\n", `p.toml:2: peer.announce_interval_secs must be an integer from 1 to 3600, got 0`},
		{"interval negative", "[peer]\nannounce_interval_secs = -5\n", `p.toml:2: peer.announce_interval_secs must be an integer from 1 to 3600, got -5`},
		{"interval a string", "[peer]\nannounce_interval_secs = \"5\"\n", `p.toml:2: peer.announce_interval_secs must be an integer from 1 to 3600, got "5"`},
		{"interval a float", "[peer]\nannounce_interval_secs = 2.5\n", `p.toml:2: peer.announce_interval_secs must be an integer from 1 to 3600, got 2.5`},
		{"timeout too large", "[peer]\ntimeout_secs = 100000\n", `p.toml:2: peer.timeout_secs must be an integer from 1 to 86400, got 100000`},
		{"queue ttl zero", "[messages]\nqueue_ttl_days = 0\n", `p.toml:2: messages.queue_ttl_days must be an integer from 1 to 365, got 0`},
		{"room history too long", "[rooms]\nhistory_messages = 100001\n", `p.toml:2: rooms.history_messages must be an integer from 1 to 100000, got 100001`},
		{"room history days a float", "[rooms]\nhistory_days = 1.5\n", `p.toml:2: rooms.history_days must be an integer from 1 to 365, got 1.5`},
		{"queue ttl a string", "[messages]\n\nqueue_ttl_days = \"7d\"\n", `p.toml:3: messages.queue_ttl_days must be an integer from 1 to 365, got "7d"`},
		{"timeout not above interval", "[peer]\nannounce_interval_secs = 10\ntimeout_secs = 10\n", `p.toml:3: peer.timeout_secs must be greater than peer.announce_interval_secs (10), got 10`},
		{"heartbeat zero", "[discovery]\nheartbeat_interval_secs = 0\n", `p.toml:2: discovery.heartbeat_interval_secs must be an integer from 1 to 3600, got 0`},
		{"peer timeout an array", "[discovery]\npeer_timeout_secs = [1]\n", `p.toml:2: discovery.peer_timeout_secs must be an integer from 1 to 86400, got an array`},
		{"require_encryption not a bool", "[security]\nrequire_encryption = \"yes\"\n", `p.toml:2: security.require_encryption must be true or false, got "yes"`},
		{"log level unknown", "[log]\nlevel = \"verbose\"\n", `p.toml:2: log.level must be one of "debug", "info", "warn", "error", got "verbose"`},
		{"log file not a string", "[log]\nfile = true\n", `p.toml:2: log.file must be a string, got true`},
		{"syntax error", "[network]\nmode = \n", `p.toml:2: invalid TOML:`},
		{"unclosed table", "[peer\n", `p.toml:1: invalid TOML:`},
		{"duplicate key", "[peer]\ntimeout_secs = 20\ntimeout_secs = 30\n", `p.toml:3: invalid TOML: `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse("p.toml", []byte(tt.doc))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("got %v, want a *config.Error", err)
			}
			msg := "config " + strings.TrimPrefix(err.Error(), "config ")
			if !strings.Contains(msg, tt.want) {
				t.Errorf("got  %s\nwant %s", msg, tt.want)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
		})
	}
}

func TestUnknownKeysWarn(t *testing.T) {
	c, w, err := Parse("p.toml", []byte("[network]\nmode = \"local\"\nmdoe = \"x\"\n[extra]\nk = 1\ntop = 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("unknown keys changed the config: %+v", c)
	}
	if len(w) != 2 {
		t.Fatalf("got %d warnings, want 2: %v", len(w), w)
	}
	if got := w[0].Error(); got != "config p.toml:3: network.mdoe is not a known key and is ignored (known keys in [network]: mode, bootstrap_server, bootstrap_servers, interface)" {
		t.Errorf("warning: %s", got)
	}
	if got := w[1].Error(); !strings.Contains(got, "p.toml:4: [extra] is not a known table") {
		t.Errorf("warning: %s", got)
	}
}

func env(m map[string]string) Env { return func(k string) string { return m[k] } }

func write(t *testing.T, path, doc string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

// -c FILE, then XDG_CONFIG_HOME (or ~/.config), then ./parlance-client.
func TestLookupOrder(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	home, xdg := filepath.Join(dir, "home"), filepath.Join(dir, "xdg")
	local := filepath.Join("parlance-client", "parlance.toml")
	explicit := filepath.Join(dir, "explicit.toml")
	write(t, local, "[peer]\nannounce_interval_secs = 1\n")
	e := env(map[string]string{"HOME": home, "XDG_CONFIG_HOME": xdg})

	check := func(name, explicitArg string, e Env, wantPath string, wantInterval int64) {
		t.Helper()
		c, path, _, err := Load(explicitArg, e)
		if err != nil || path != wantPath || c.Peer.AnnounceIntervalSecs != wantInterval {
			t.Errorf("%s: got %s interval %d (%v), want %s interval %d", name, path, c.Peer.AnnounceIntervalSecs, err, wantPath, wantInterval)
		}
	}
	check("only the original's place", "", e, local, 1)
	write(t, filepath.Join(home, ".config", "parlance", "parlance.toml"), "[peer]\nannounce_interval_secs = 2\n")
	check("XDG_CONFIG_HOME set but empty of config", "", e, local, 1)
	check("~/.config without XDG_CONFIG_HOME", "", env(map[string]string{"HOME": home}), filepath.Join(home, ".config", "parlance", "parlance.toml"), 2)
	write(t, filepath.Join(xdg, "parlance", "parlance.toml"), "[peer]\nannounce_interval_secs = 3\n")
	check("XDG_CONFIG_HOME first", "", e, filepath.Join(xdg, "parlance", "parlance.toml"), 3)
	write(t, explicit, "[peer]\nannounce_interval_secs = 4\n")
	check("-c beats everything", explicit, e, explicit, 4)
	check("relative XDG_CONFIG_HOME is ignored", "", env(map[string]string{"HOME": home, "XDG_CONFIG_HOME": "rel"}), filepath.Join(home, ".config", "parlance", "parlance.toml"), 2)

	os.Remove(local)
	c, path, _, err := Load("", env(map[string]string{}))
	if err != nil || path != "" || !reflect.DeepEqual(c, Default()) {
		t.Errorf("nothing found: got %q %+v %v, want the defaults", path, c, err)
	}
	_, _, _, err = Load(filepath.Join(dir, "missing.toml"), e)
	if err == nil || !strings.Contains(err.Error(), "missing.toml: cannot be read: no such file or directory") {
		t.Errorf("missing -c file: got %v", err)
	}
}

func TestGenerate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.toml")
	if err := Generate(path); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if string(b) != Template {
		t.Error("generated file differs from the template")
	}
	if err := Generate(path); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second generate: got %v, want a refusal to overwrite", err)
	}
}
