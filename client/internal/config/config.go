// Package config reads the parlance client's TOML configuration: the
// original's keys and defaults plus a few of ours, where it is looked up,
// and errors that name the file, the line, the key and the allowed values.
package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// Config is the client configuration. Field names follow the file's keys.
type Config struct {
	Network   Network
	Discovery Discovery
	Peer      Peer
	Log       Log
	Profile   Profile
	Security  Security
	Messages  Messages
	Rooms     Rooms
}

// Rooms is the [rooms] table (ours): the history a member serves to one
// that joins late or comes back.
type Rooms struct {
	HistoryMessages int64 // at most this many messages (1-100000)
	HistoryDays     int64 // none older than this (1-365)
}

// Bounds of the [rooms] keys.
const (
	MaxRoomHistoryMessages = 100000
	MaxRoomHistoryDays     = 365
)

// Messages is the [messages] table (ours): the offline queue.
type Messages struct {
	QueueTTLDays int64 // how long a message to an away peer waits (1-365)
}

// MaxQueueTTLDays bounds messages.queue_ttl_days.
const MaxQueueTTLDays = 365

// Profile is the [profile] table (ours): where the identity and the
// known-peers file live.
type Profile struct {
	DataDir      string // "" = $XDG_DATA_HOME/parlance; profiles are <data dir>/<nickname>
	IdentityFile string // "" = <profile dir>/identity
}

// Security is the [security] table (ours).
type Security struct {
	RequireEncryption bool
}

// Network is the [network] table.
type Network struct {
	Mode string // "local" or "internet"
	// BootstrapServers are ws:// or wss:// URLs, at least one: the file's
	// bootstrap_servers, or bootstrap_server alone.
	BootstrapServers []string
	Interface        string // multicast interface name; "" = system default (ours)
}

// Discovery is the [discovery] table (internet mode timings).
type Discovery struct {
	HeartbeatIntervalSecs int64
	PeerTimeoutSecs       int64
}

// Peer is the [peer] table (local mode timings).
type Peer struct {
	AnnounceIntervalSecs int64
	TimeoutSecs          int64
}

// Log is the [log] table (ours).
type Log struct {
	File  string // "" = stderr
	Level string // debug, info, warn, error
}

// Default returns the original's defaults.
func Default() Config {
	return Config{
		Network:   Network{Mode: "local", BootstrapServers: []string{"ws://localhost:8080"}},
		Discovery: Discovery{HeartbeatIntervalSecs: 10, PeerTimeoutSecs: 30},
		Peer:      Peer{AnnounceIntervalSecs: 5, TimeoutSecs: 15},
		Log:       Log{Level: "warn"},
		Messages:  Messages{QueueTTLDays: 7},
		Rooms:     Rooms{HistoryMessages: 500, HistoryDays: 7},
	}
}

// Error is a configuration error a user can act on: the file and line (0
// when unknown), the key, and what is allowed.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	where := e.File
	if e.Line > 0 {
		where = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Key == "" {
		return fmt.Sprintf("config %s: %s", where, e.Msg)
	}
	return fmt.Sprintf("config %s: %s %s", where, e.Key, e.Msg)
}

// Warning is a problem that does not stop the program, such as an unknown
// key.
type Warning = Error

// A key is the rule for one setting.
type key struct {
	name  string // "network.mode"
	check func(c *Config, v value) error
}

type value struct {
	kind  unstable.Kind
	raw   string  // the raw TOML text for messages
	str   string  // decoded string for String values
	line  int     // where the value starts
	elems []value // an Array's elements
}

func (v value) describe() string { return v.raw }

var (
	errNotString = errors.New("not a string")
	errNotInt    = errors.New("not an integer")
)

func stringValue(v value) (string, error) {
	if v.kind != unstable.String {
		return "", errNotString
	}
	return v.str, nil
}

func intValue(v value) (int64, error) {
	if v.kind != unstable.Integer {
		return 0, errNotInt
	}
	return strconv.ParseInt(strings.ReplaceAll(v.raw, "_", ""), 0, 64)
}

// Allowed ranges of the timings, in seconds.
const (
	maxIntervalSecs = 3600
	maxTimeoutSecs  = 86400
)

// ModeValues, LevelValues: the allowed values of mode and log level.
var (
	ModeValues  = []string{"local", "internet"}
	LevelValues = []string{"debug", "info", "warn", "error"}
)

func oneOf(allowed []string) string {
	q := make([]string, len(allowed))
	for i, a := range allowed {
		q[i] = strconv.Quote(a)
	}
	if len(q) == 2 {
		return q[0] + " or " + q[1]
	}
	return "one of " + strings.Join(q, ", ")
}

// CheckMode, CheckLevel, CheckURL and CheckSecs validate one setting; the
// flags use them too. The error says what is allowed.
func CheckMode(s string) error {
	if !slices.Contains(ModeValues, s) {
		return fmt.Errorf("must be %s, got %q", oneOf(ModeValues), s)
	}
	return nil
}

func CheckLevel(s string) error {
	if !slices.Contains(LevelValues, s) {
		return fmt.Errorf("must be %s, got %q", oneOf(LevelValues), s)
	}
	return nil
}

func CheckURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return fmt.Errorf("must be a ws:// or wss:// URL with a host, got %q", s)
	}
	return nil
}

func CheckSecs(n, max int64) error {
	if n < 1 || n > max {
		return fmt.Errorf("must be an integer from 1 to %d, got %d", max, n)
	}
	return nil
}

func strKey(name string, set func(*Config, string), check func(string) error) key {
	return key{name: name, check: func(c *Config, v value) error {
		s, err := stringValue(v)
		if err != nil {
			if check == nil {
				return fmt.Errorf("must be a string, got %s", v.describe())
			}
			// Name what is allowed, not only the type.
			return fmt.Errorf("%s", strings.Replace(check("\x00").Error(), `got "\x00"`, "got "+v.describe(), 1))
		}
		if check != nil {
			if err := check(s); err != nil {
				return err
			}
		}
		set(c, s)
		return nil
	}}
}

// elemError is a wrong element of an array: the error names the element
// and its line, not only the key's.
type elemError struct {
	index, line int
	msg         string
}

func (e *elemError) Error() string { return e.msg }

// urlsKey is a non-empty array of bootstrap server URLs, each checked as
// CheckURL does.
func urlsKey(name string, set func(*Config, []string)) key {
	return key{name: name, check: func(c *Config, v value) error {
		if v.kind != unstable.Array {
			return fmt.Errorf("must be an array of ws:// or wss:// URLs, got %s", v.describe())
		}
		if len(v.elems) == 0 {
			return errors.New("must list at least one ws:// or wss:// URL, got []")
		}
		urls := make([]string, len(v.elems))
		for i, e := range v.elems {
			s, err := stringValue(e)
			if err != nil {
				return &elemError{i, e.line, fmt.Sprintf("must be a ws:// or wss:// URL with a host, got %s", e.describe())}
			}
			if err := CheckURL(s); err != nil {
				return &elemError{i, e.line, err.Error()}
			}
			urls[i] = s
		}
		set(c, urls)
		return nil
	}}
}

func boolKey(name string, set func(*Config, bool)) key {
	return key{name: name, check: func(c *Config, v value) error {
		switch {
		case v.kind == unstable.Bool && v.raw == "true":
			set(c, true)
		case v.kind == unstable.Bool && v.raw == "false":
			set(c, false)
		default:
			return fmt.Errorf("must be true or false, got %s", v.describe())
		}
		return nil
	}}
}

func secsKey(name string, max int64, set func(*Config, int64)) key {
	return key{name: name, check: func(c *Config, v value) error {
		n, err := intValue(v)
		if err != nil {
			return fmt.Errorf("must be an integer from 1 to %d, got %s", max, v.describe())
		}
		if err := CheckSecs(n, max); err != nil {
			return err
		}
		set(c, n)
		return nil
	}}
}

var keys = []key{
	strKey("network.mode", func(c *Config, s string) { c.Network.Mode = s }, CheckMode),
	strKey("network.bootstrap_server", func(c *Config, s string) { c.Network.BootstrapServers = []string{s} }, CheckURL),
	urlsKey("network.bootstrap_servers", func(c *Config, s []string) { c.Network.BootstrapServers = s }),
	strKey("network.interface", func(c *Config, s string) { c.Network.Interface = s }, nil),
	secsKey("discovery.heartbeat_interval_secs", maxIntervalSecs, func(c *Config, n int64) { c.Discovery.HeartbeatIntervalSecs = n }),
	secsKey("discovery.peer_timeout_secs", maxTimeoutSecs, func(c *Config, n int64) { c.Discovery.PeerTimeoutSecs = n }),
	secsKey("peer.announce_interval_secs", maxIntervalSecs, func(c *Config, n int64) { c.Peer.AnnounceIntervalSecs = n }),
	secsKey("peer.timeout_secs", maxTimeoutSecs, func(c *Config, n int64) { c.Peer.TimeoutSecs = n }),
	strKey("log.file", func(c *Config, s string) { c.Log.File = s }, nil),
	strKey("log.level", func(c *Config, s string) { c.Log.Level = s }, CheckLevel),
	strKey("profile.data_dir", func(c *Config, s string) { c.Profile.DataDir = s }, nil),
	strKey("profile.identity_file", func(c *Config, s string) { c.Profile.IdentityFile = s }, nil),
	boolKey("security.require_encryption", func(c *Config, b bool) { c.Security.RequireEncryption = b }),
	secsKey("messages.queue_ttl_days", MaxQueueTTLDays, func(c *Config, n int64) { c.Messages.QueueTTLDays = n }),
	secsKey("rooms.history_messages", MaxRoomHistoryMessages, func(c *Config, n int64) { c.Rooms.HistoryMessages = n }),
	secsKey("rooms.history_days", MaxRoomHistoryDays, func(c *Config, n int64) { c.Rooms.HistoryDays = n }),
}

// Parse reads a configuration file's contents on top of the defaults. file
// names the file in messages. Unknown keys are warnings; anything else
// wrong is an *Error.
func Parse(file string, data []byte) (Config, []Warning, error) {
	c := Default()
	// The full decoder finds syntax errors and duplicate keys.
	var syntax map[string]any
	if err := toml.Unmarshal(data, &syntax); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return c, nil, &Error{File: file, Line: line, Msg: "invalid TOML: " + strings.TrimPrefix(de.Error(), "toml: ")}
		}
		return c, nil, &Error{File: file, Msg: "invalid TOML: " + err.Error()}
	}

	var warnings []Warning
	lines := map[string]int{}
	var p unstable.Parser
	p.Reset(data)
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyParts(e.Key())
			name := strings.Join(table, ".")
			if !knownTable(name) {
				warnings = append(warnings, Warning{File: file, Line: lineOf(&p, e), Key: "[" + name + "]",
					Msg: "is not a known table and is ignored (known: [network], [discovery], [peer], [log], [profile], [security], [messages])"})
			}
		case unstable.KeyValue:
			name := strings.Join(append(slices.Clone(table), keyParts(e.Key())...), ".")
			line := lineOf(&p, e)
			k, ok := lookup(name)
			if !ok {
				if knownTable(strings.Join(table, ".")) || len(table) == 0 {
					warnings = append(warnings, Warning{File: file, Line: line, Key: name, Msg: "is not a known key and is ignored" + knownIn(name)})
				}
				continue
			}
			v := valueOf(&p, e.Value(), line)
			if err := k.check(&c, v); err != nil {
				ce := &Error{File: file, Line: line, Key: name, Msg: err.Error()}
				var ee *elemError
				if errors.As(err, &ee) {
					ce.Line, ce.Key = ee.line, fmt.Sprintf("%s[%d]", name, ee.index)
				}
				return c, warnings, ce
			}
			lines[name] = line
			// Both would set the same list: which one wins would be a
			// guess.
			if other := otherURLKey(name); other != "" && lines[other] > 0 {
				return c, warnings, &Error{File: file, Line: line, Key: name,
					Msg: fmt.Sprintf("cannot be set together with %s (line %d): use network.bootstrap_servers alone, it takes one URL or several", other, lines[other])}
			}
		}
	}
	if err := p.Error(); err != nil {
		return c, warnings, &Error{File: file, Msg: "invalid TOML: " + err.Error()}
	}
	if c.Peer.TimeoutSecs <= c.Peer.AnnounceIntervalSecs {
		return c, warnings, &Error{File: file, Line: lines["peer.timeout_secs"], Key: "peer.timeout_secs",
			Msg: fmt.Sprintf("must be greater than peer.announce_interval_secs (%d), got %d", c.Peer.AnnounceIntervalSecs, c.Peer.TimeoutSecs)}
	}
	return c, warnings, nil
}

// otherURLKey is the other key of the bootstrap server list, for either
// of them; "" for any other key.
func otherURLKey(name string) string {
	switch name {
	case "network.bootstrap_server":
		return "network.bootstrap_servers"
	case "network.bootstrap_servers":
		return "network.bootstrap_server"
	}
	return ""
}

// valueOf describes a value node that starts on line (the key's line; an
// array's elements carry their own).
func valueOf(p *unstable.Parser, n *unstable.Node, line int) value {
	v := value{kind: n.Kind, raw: rawText(p, n), line: line}
	switch n.Kind {
	case unstable.String:
		v.str = string(n.Data)
	case unstable.Array:
		v.elems = []value{}
		it := n.Children()
		for it.Next() {
			e := it.Node()
			eline := line
			if e.Raw.Length > 0 {
				eline = p.Shape(e.Raw).Start.Line
			}
			v.elems = append(v.elems, valueOf(p, e, eline))
		}
	}
	return v
}

func keyParts(it unstable.Iterator) []string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}

func lineOf(p *unstable.Parser, e *unstable.Node) int {
	it := e.Key()
	if it.Next() {
		return p.Shape(it.Node().Raw).Start.Line
	}
	return p.Shape(e.Raw).Start.Line
}

func rawText(p *unstable.Parser, n *unstable.Node) string {
	switch n.Kind {
	case unstable.Array:
		return "an array"
	case unstable.InlineTable:
		return "a table"
	}
	if n.Raw.Length == 0 {
		return string(n.Data)
	}
	s := string(p.Raw(n.Raw))
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}

func lookup(name string) (key, bool) {
	for _, k := range keys {
		if k.name == name {
			return k, true
		}
	}
	return key{}, false
}

func knownTable(name string) bool {
	for _, k := range keys {
		if t, _, _ := strings.Cut(k.name, "."); t == name {
			return true
		}
	}
	return false
}

func knownIn(name string) string {
	t, _, ok := strings.Cut(name, ".")
	if !ok {
		return " (keys belong in [network], [discovery], [peer], [log], [profile], [security], [messages] or [rooms])"
	}
	var known []string
	for _, k := range keys {
		if kt, kn, _ := strings.Cut(k.name, "."); kt == t {
			known = append(known, kn)
		}
	}
	return fmt.Sprintf(" (known keys in [%s]: %s)", t, strings.Join(known, ", "))
}

// Env gives Lookup the environment; tests pass a map.
type Env func(string) string

// Candidates returns the files Lookup tries, in order: explicit (when set,
// and then only it), $XDG_CONFIG_HOME/parlance/parlance.toml or
// $HOME/.config/parlance/parlance.toml, and the original's
// ./parlance-client/parlance.toml.
func Candidates(explicit string, env Env) []string {
	if explicit != "" {
		return []string{explicit}
	}
	var c []string
	if x := env("XDG_CONFIG_HOME"); x != "" && filepath.IsAbs(x) {
		c = append(c, filepath.Join(x, "parlance", "parlance.toml"))
	} else if h := env("HOME"); h != "" {
		c = append(c, filepath.Join(h, ".config", "parlance", "parlance.toml"))
	}
	return append(c, filepath.Join("parlance-client", "parlance.toml"))
}

// Load finds and parses the configuration. With explicit set, that file
// must exist; otherwise the first candidate that exists is used, and none
// means the defaults (path ""). It returns the file used.
func Load(explicit string, env Env) (Config, string, []Warning, error) {
	for _, path := range Candidates(explicit, env) {
		data, err := os.ReadFile(path)
		if err != nil {
			if explicit == "" && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return Default(), path, nil, &Error{File: path, Msg: "cannot be read: " + unwrapPath(err)}
		}
		c, w, err := Parse(path, data)
		return c, path, w, err
	}
	return Default(), "", nil, nil
}

func unwrapPath(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// Template is the commented default file --generate-config writes.
const Template = `# Parlance client configuration (TOML).
# Looked up in this order: the file given with -c/--config,
# $XDG_CONFIG_HOME/parlance/parlance.toml (or ~/.config/parlance/parlance.toml),
# ./parlance-client/parlance.toml. Command-line flags override it.

[network]
# How peers are found: "local" (LAN multicast) or "internet" (bootstrap server).
mode = "local"
# The bootstrap servers for internet mode: ws:// or wss:// URLs, at least
# one. One is used at a time, from the first; when it cannot be reached or
# is lost, the next one is tried (after the last, the first again).
# bootstrap_server = "ws://..." (one URL) works too, instead of this key.
bootstrap_servers = ["ws://localhost:8080"]
# Multicast interface for local mode, e.g. "eth0"; empty = the system's default.
# interface = ""

[discovery]
# Internet mode: seconds between heartbeats to the bootstrap server (1-3600).
heartbeat_interval_secs = 10
# Internet mode: seconds after which the server forgets a silent peer (1-86400).
peer_timeout_secs = 30

[peer]
# Local mode: seconds between announces on the LAN (1-3600; jittered by ±10%).
announce_interval_secs = 5
# Local mode: seconds after which a silent peer is dropped (1-86400;
# must be greater than announce_interval_secs).
timeout_secs = 15

[log]
# Log file; empty = standard error, or $XDG_STATE_HOME/parlance/parlance.log
# in an interactive chat. Logs never go to the chat's output.
# file = ""
# Log level: "debug", "info", "warn" or "error".
level = "warn"

[profile]
# Where profiles live: each nickname's identity key and known-peers file
# are in <data_dir>/<nickname>/. Empty = $XDG_DATA_HOME/parlance (or
# ~/.local/share/parlance). Same as --data-dir.
# data_dir = ""
# The identity key file alone; empty = <profile dir>/identity. Same as --identity.
# identity_file = ""

[security]
# Refuse to send to or accept messages from peers that cannot encrypt
# (original clients). Same as --require-encryption.
require_encryption = false

[messages]
# Days a message to a known peer that is away waits in the queue (in the
# profile's messages.db) before it expires undelivered (1-365).
queue_ttl_days = 7

[rooms]
# What a member sends one that joins a room late or comes back: at most
# history_messages messages (1-100000), none older than history_days
# days (1-365).
history_messages = 500
history_days = 7
`

// Generate writes Template to path. It refuses to overwrite a file.
func Generate(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; remove it or choose another file", path)
		}
		return fmt.Errorf("cannot write %s: %s", path, unwrapPath(err))
	}
	if _, err := f.WriteString(Template); err != nil {
		f.Close()
		return fmt.Errorf("cannot write %s: %s", path, unwrapPath(err))
	}
	return f.Close()
}
