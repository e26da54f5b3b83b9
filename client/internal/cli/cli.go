// Package cli is the parlance program: flags, configuration, logging and
// the chat's terminal UI around a chat.Node.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/internal/config"
	"github.com/parlance-chat/parlance/protocol"
)

// Version is the program's version, printed by -V.
const Version = "0.2.0"

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1 // the chat could not start or failed
	exitUsage   = 2 // bad flags, configuration or nickname
)

// Env is everything a run takes from its surroundings. Run fills it from
// the process; tests build their own.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Network provides the node's sockets (chat.OSNetwork{} in the
	// program).
	Network chat.Network
	// Terminal says stdin and stdout are a terminal: use liner. Run
	// detects it; tests set Prompter instead.
	Terminal bool
	// Prompter, when set, replaces the stdin reader (tests).
	Prompter Prompter
	// Now is the clock for "seconds since last seen" (time.Now if nil).
	Now func() time.Time
	// Location formats message times (time.Local if nil).
	Location *time.Location
}

// Run runs parlance with args (without the program name) and returns the
// exit status.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	env := Env{Stdin: stdin, Stdout: stdout, Stderr: stderr, Getenv: os.Getenv, Network: chat.OSNetwork{}}
	env.Terminal = isTerminalFile(stdin) && isTerminalFile(stdout)
	return RunEnv(ctx, args, env)
}

func isTerminalFile(x any) bool {
	f, ok := x.(interface{ Fd() uintptr })
	return ok && isTerminal(f.Fd())
}

// Settings is the effective configuration after file and flags.
type Settings struct {
	Nickname   string
	ConfigFile string // "" when the defaults were used
	Config     config.Config
}

// options are the parsed flags.
type options struct {
	nickname, configFile, generate, mode, iface, logFile, logLevel string
	dataDir, identityFile                                          string
	bootstrap                                                      urlList
	version, requireEncryption                                     bool
	set                                                            map[string]bool
}

// urlList gathers --bootstrap-server, which may be repeated and may hold
// several URLs separated by commas; resolve checks each.
type urlList []string

func (l *urlList) String() string { return strings.Join(*l, ",") }

func (l *urlList) Set(s string) error {
	for _, u := range strings.Split(s, ",") {
		*l = append(*l, strings.TrimSpace(u))
	}
	return nil
}

const usageText = `parlance: a decentralized peer-to-peer chat

Usage: parlance --nickname <NICKNAME> [OPTIONS]

Options:
  -n, --nickname <NICKNAME>     your nickname (1-32 bytes)
  -c, --config <FILE>           configuration file (TOML)
      --generate-config <FILE>  write a commented default configuration and exit
  -m, --mode <MODE>             local (LAN multicast) or internet (bootstrap server)
      --bootstrap-server <URL>  bootstrap server for internet mode (ws:// or wss://);
                                repeat it or separate URLs by commas to list
                                several: one is used, the next if it fails
  -i, --interface <NAME>        network interface for LAN multicast (default: the system's)
      --log-file <FILE>         write logs to FILE (default: standard error, or
                                $XDG_STATE_HOME/parlance/parlance.log when interactive)
      --log-level <LEVEL>       debug, info, warn (default) or error
      --data-dir <DIR>          where profiles live (default: $XDG_DATA_HOME/parlance
                                or ~/.local/share/parlance); this nickname's identity
                                key and known peers are in DIR/<nickname>/
      --identity <FILE>         identity key file (default: <profile dir>/identity)
      --require-encryption      refuse to send to or accept messages from peers
                                that cannot encrypt (original clients)
  -h, --help                    print this help
  -V, --version                 print the version

Configuration is read from -c FILE, else $XDG_CONFIG_HOME/parlance/parlance.toml
(or ~/.config/parlance/parlance.toml), else ./parlance-client/parlance.toml;
flags override it. In the chat, type /help for the commands.
`

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("parlance", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	str := func(p *string, names ...string) {
		for _, n := range names {
			fs.StringVar(p, n, "", "")
		}
	}
	str(&o.nickname, "n", "nickname")
	str(&o.configFile, "c", "config")
	str(&o.generate, "generate-config")
	str(&o.mode, "m", "mode")
	fs.Var(&o.bootstrap, "bootstrap-server", "")
	str(&o.iface, "i", "interface")
	str(&o.logFile, "log-file")
	str(&o.logLevel, "log-level")
	str(&o.dataDir, "data-dir")
	str(&o.identityFile, "identity")
	fs.BoolVar(&o.requireEncryption, "require-encryption", false, "")
	fs.BoolVar(&o.version, "V", false, "")
	fs.BoolVar(&o.version, "version", false, "")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.set = map[string]bool{}
	canon := map[string]string{"n": "nickname", "c": "config", "m": "mode", "i": "interface", "V": "version"}
	fs.Visit(func(f *flag.Flag) {
		name := f.Name
		if c, ok := canon[name]; ok {
			name = c
		}
		o.set[name] = true
	})
	return o, nil
}

// resolve applies the configuration file and the flags, in that order,
// and checks the result. Problems that stop the program come back as
// error; warnings are printed to stderr.
func resolve(o options, env Env) (Settings, error) {
	var s Settings
	cfg, path, warnings, err := config.Load(o.configFile, env.Getenv)
	for _, w := range warnings {
		fmt.Fprintf(env.Stderr, "parlance: warning: %s\n", w.Error())
	}
	if err != nil {
		return s, err
	}
	s.ConfigFile = path
	flagErr := func(name string, err error) error { return fmt.Errorf("--%s %v", name, err) }
	if o.set["mode"] {
		if err := config.CheckMode(o.mode); err != nil {
			return s, flagErr("mode", err)
		}
		cfg.Network.Mode = o.mode
	}
	if o.set["bootstrap-server"] {
		// The flags replace the file's list as a whole: a user naming
		// servers on the command line means those.
		for _, u := range o.bootstrap {
			if err := config.CheckURL(u); err != nil {
				return s, flagErr("bootstrap-server", err)
			}
		}
		cfg.Network.BootstrapServers = slices.Clone(o.bootstrap)
	}
	if o.set["interface"] {
		cfg.Network.Interface = o.iface
	}
	if o.set["log-file"] {
		cfg.Log.File = o.logFile
	}
	if o.set["log-level"] {
		if err := config.CheckLevel(o.logLevel); err != nil {
			return s, flagErr("log-level", err)
		}
		cfg.Log.Level = o.logLevel
	}
	if o.set["data-dir"] {
		if o.dataDir == "" {
			return s, flagErr("data-dir", errors.New("must name a directory"))
		}
		cfg.Profile.DataDir = o.dataDir
	}
	if o.set["identity"] {
		if o.identityFile == "" {
			return s, flagErr("identity", errors.New("must name a file"))
		}
		cfg.Profile.IdentityFile = o.identityFile
	}
	if o.set["require-encryption"] {
		cfg.Security.RequireEncryption = o.requireEncryption
	}
	s.Config = cfg
	s.Nickname = o.nickname
	return s, nil
}

// RunEnv is Run with an explicit environment.
func RunEnv(ctx context.Context, args []string, env Env) int {
	o, err := parseFlags(args, env.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(env.Stdout, usageText)
		return exitOK
	case err != nil:
		fmt.Fprintf(env.Stderr, "parlance: %v\n\nUsage: parlance --nickname <NICKNAME> [OPTIONS]\nFor more information, try '--help'.\n", err)
		return exitUsage
	}
	if o.version {
		fmt.Fprintf(env.Stdout, "parlance %s\n", Version)
		return exitOK
	}
	if o.set["generate-config"] {
		if err := config.Generate(o.generate); err != nil {
			fmt.Fprintf(env.Stderr, "parlance: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(env.Stdout, "Wrote a default configuration to %s\n", o.generate)
		return exitOK
	}
	if !o.set["nickname"] {
		fmt.Fprint(env.Stderr, "error: the following required arguments were not provided:\n  --nickname <NICKNAME>\n\nUsage: parlance --nickname <NICKNAME> [OPTIONS]\n\nFor more information, try '--help'.\n")
		return exitUsage
	}
	if err := protocol.ValidateNickname(o.nickname); err != nil {
		fmt.Fprintf(env.Stderr, "Error: Invalid nickname: %v\n", err)
		return exitUsage
	}
	s, err := resolve(o, env)
	if err != nil {
		fmt.Fprintf(env.Stderr, "parlance: %v\n", err)
		return exitUsage
	}
	if s.Config.Log.File == "" && env.Terminal {
		// In an interactive chat, stderr is the chat's screen: a log line
		// there would land in the middle of the prompt.
		s.Config.Log.File = statePath(env.Getenv, "parlance.log")
	}
	logger, closeLog, err := newLogger(s.Config.Log, env.Stderr)
	if err != nil {
		fmt.Fprintf(env.Stderr, "parlance: %v\n", err)
		return exitUsage
	}
	defer closeLog()
	return runChat(ctx, s, env, logger)
}

func newLogger(lc config.Log, stderr io.Writer) (*slog.Logger, func(), error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(lc.Level)); err != nil {
		return nil, nil, fmt.Errorf("log level %q: %w", lc.Level, err)
	}
	w, closer := stderr, func() {}
	if lc.File != "" {
		if err := os.MkdirAll(filepath.Dir(lc.File), 0o700); err != nil {
			return nil, nil, fmt.Errorf("log file: %w", err)
		}
		f, err := os.OpenFile(lc.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("log file: %w", err)
		}
		w, closer = f, func() { f.Close() }
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})), closer, nil
}

// historyPath is where the command history is kept across runs.
func historyPath(getenv func(string) string) string { return statePath(getenv, "history") }

// statePath is $XDG_STATE_HOME/parlance/name or
// ~/.local/state/parlance/name; "" if neither is known.
func statePath(getenv func(string) string, name string) string {
	if x := getenv("XDG_STATE_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "parlance", name)
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "parlance", name)
	}
	return ""
}

func lookupInterface(name string) (*net.Interface, error) {
	if name == "" {
		return nil, nil
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		var names []string
		if all, lerr := net.Interfaces(); lerr == nil {
			for _, i := range all {
				if i.Flags&net.FlagMulticast != 0 {
					names = append(names, i.Name)
				}
			}
		}
		return nil, fmt.Errorf("interface %q not found (multicast interfaces: %s)", name, strings.Join(names, ", "))
	}
	return ifi, nil
}
