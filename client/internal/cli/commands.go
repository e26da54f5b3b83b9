package cli

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// CmdKind is what a typed line asks for.
type CmdKind uint8

const (
	CmdEmpty      CmdKind = iota // an empty line: nothing to do
	CmdSend                      // /send <nickname> <message>
	CmdPeers                     // /peers
	CmdHelp                      // /help, /h
	CmdQuit                      // /quit, /exit, /q
	CmdWhoami                    // /whoami
	CmdVerify                    // /verify <nickname>
	CmdTrust                     // /trust <nickname>[#fingerprint]
	CmdForget                    // /forget <nickname>
	CmdQueue                     // /queue
	CmdHistory                   // /history <nickname> [n]
	CmdSearch                    // /search <words>
	CmdUsage                     // a known command used wrongly; Msg says how
	CmdUnknown                   // /something else; Msg
	CmdNotCommand                // text without a leading /: Text, for the current room; Msg if there is none
	CmdJoin                      // /join #room [secret]
	CmdLeave                     // /leave [#room]
	CmdRooms                     // /rooms
	CmdMembers                   // /members [#room]
)

// Command is a parsed input line.
type Command struct {
	Kind CmdKind
	Name string // CmdSend, CmdVerify, CmdTrust, CmdForget, CmdHistory: the nickname, selector or #room; CmdJoin, CmdLeave, CmdMembers: the #room ("" for the current one)
	Text string // CmdSend, CmdNotCommand: the message, inner spacing kept; CmdSearch: the words; CmdJoin: the secret
	N    int    // CmdHistory: how many messages
	Msg  string // CmdUsage, CmdUnknown, CmdNotCommand: what to tell the user
}

// The original's texts, then our hint.
const (
	usageSend  = "Usage: /send <nickname> <message>"
	helpHint   = "Type /help for the list of commands."
	notCommand = "Not sent: you are in no room. Commands start with /: /send <nickname> <message> to a peer, /join #room to talk in a room"
)

// Commands lists the command words, for completion.
var commandWords = []string{"/send ", "/peers", "/join ", "/leave", "/rooms", "/members", "/queue", "/history ", "/search ", "/whoami", "/verify ", "/trust ", "/forget ", "/help", "/quit", "/exit", "/q", "/h"}

// DefaultHistory is how many messages /history shows without a count;
// MaxHistory bounds the count.
const (
	DefaultHistory = 20
	MaxHistory     = 10000
)

// ParseCommand parses one input line.
func ParseCommand(line string) Command {
	line = strings.TrimSpace(line)
	if line == "" {
		return Command{Kind: CmdEmpty}
	}
	if !strings.HasPrefix(line, "/") {
		return Command{Kind: CmdNotCommand, Text: line, Msg: notCommand + ". " + helpHint}
	}
	word, rest := cut(line)
	switch word {
	case "/send":
		name, text := cut(rest)
		if strings.HasPrefix(name, "#") && strings.TrimSpace(text) == "" {
			return Command{Kind: CmdUsage, Msg: "Usage: /send #room <message>"}
		}
		if name == "" || strings.TrimSpace(text) == "" {
			return Command{Kind: CmdUsage, Msg: usageSend}
		}
		return Command{Kind: CmdSend, Name: name, Text: text}
	case "/peers":
		return Command{Kind: CmdPeers}
	case "/queue":
		return Command{Kind: CmdQueue}
	case "/history":
		const usage = "Usage: /history <nickname|#room> [n]  (the last n messages, default 20)"
		name, extra := cut(rest)
		if name == "" {
			return Command{Kind: CmdUsage, Msg: usage}
		}
		n := DefaultHistory
		if extra != "" {
			v, err := strconv.Atoi(extra)
			if err != nil || v < 1 || v > MaxHistory {
				return Command{Kind: CmdUsage, Msg: fmt.Sprintf("%s; n must be a number from 1 to %d", usage, MaxHistory)}
			}
			n = v
		}
		return Command{Kind: CmdHistory, Name: name, N: n}
	case "/search":
		if rest == "" {
			return Command{Kind: CmdUsage, Msg: "Usage: /search <words>  (finds stored messages with all the words; word* matches a prefix)"}
		}
		return Command{Kind: CmdSearch, Text: rest}
	case "/whoami":
		return Command{Kind: CmdWhoami}
	case "/join":
		// The secret is the rest of the line: a few words make a good one.
		name, secret := cut(rest)
		if !strings.HasPrefix(name, "#") {
			return Command{Kind: CmdUsage, Msg: "Usage: /join #room [secret]  (a room is # and up to 32 of a-z, 0-9, _ and -; with a secret, only those who know it can find or read the room)"}
		}
		return Command{Kind: CmdJoin, Name: name, Text: secret}
	case "/leave", "/members":
		name, extra := cut(rest)
		if extra != "" || (name != "" && !strings.HasPrefix(name, "#")) {
			return Command{Kind: CmdUsage, Msg: "Usage: " + word + " [#room]  (the current room without one)"}
		}
		return Command{Kind: map[string]CmdKind{"/leave": CmdLeave, "/members": CmdMembers}[word], Name: name}
	case "/rooms":
		return Command{Kind: CmdRooms}
	case "/verify", "/trust", "/forget":
		name, extra := cut(rest)
		if name == "" || extra != "" {
			return Command{Kind: CmdUsage, Msg: "Usage: " + word + " <nickname>" + map[string]string{"/trust": "[#fingerprint]"}[word]}
		}
		kind := map[string]CmdKind{"/verify": CmdVerify, "/trust": CmdTrust, "/forget": CmdForget}[word]
		return Command{Kind: kind, Name: name}
	case "/help", "/h":
		return Command{Kind: CmdHelp}
	case "/quit", "/exit", "/q":
		return Command{Kind: CmdQuit}
	default:
		return Command{Kind: CmdUnknown, Msg: "Unknown command: " + strings.TrimPrefix(word, "/") + ". " + helpHint}
	}
}

// cut splits s at its first run of whitespace: the first word and the
// rest, with the rest's leading whitespace removed and its inner spacing
// kept.
func cut(s string) (word, rest string) {
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimLeftFunc(s[i:], unicode.IsSpace)
}

// HelpText is what /help prints.
const HelpText = `Commands:
  /send <nickname> <message>   send a direct message; when several peers share
                               a nickname, pick one as nickname@ip:port or
                               nickname#<fingerprint prefix>; to a known peer
                               that is away it is queued and sent when it is back
  /send #room <message>        post to a room you joined
  <message>                    (no /) post to the current room
  /join #room [secret]         join a room (and make it current); with a secret,
                               only peers that know it can find or read the room
  /leave [#room]               leave a room (the current one without a name)
  /rooms                       the rooms you are in, with their members
  /members [#room]             who is in a room
  /peers                       list the peers found: key fingerprint, trust
                               (verified, known, new, KEY CHANGED, unencrypted),
                               address, how and when last seen
  /queue                       messages waiting for peers that are away; each
                               goes out when its peer is back (for 7 days)
  /history <nickname> [n]      the last n (default 20) messages with a peer
  /history #room [n]           the last n messages of a room
  /search <words>              find stored messages with all the words
  /whoami                      your nickname, fingerprint, mode, port, data dir
  /verify <nickname>           show both fingerprints and the safety number,
                               to compare with the peer out of band
  /trust <nickname>            mark the peer's key verified; after a key
                               change, /trust nickname#<fingerprint> accepts it
  /forget <nickname>           drop the key pinned for a nickname
  /help, /h                    show this help
  /quit, /exit, /q             leave (peers are told); Ctrl-D and Ctrl-C too`

// complete returns completions of a partly typed line: command words,
// and peer names after "/send ".
func complete(line string, names []string) []string {
	for _, w := range []string{"/verify ", "/trust ", "/forget ", "/history "} {
		if rest, ok := strings.CutPrefix(line, w); ok && !strings.ContainsFunc(strings.TrimLeft(rest, " "), unicode.IsSpace) {
			var out []string
			for _, n := range names {
				if strings.HasPrefix(n, strings.TrimLeft(rest, " ")) {
					out = append(out, w+n)
				}
			}
			return out
		}
	}
	if rest, ok := strings.CutPrefix(line, "/send "); ok {
		if strings.ContainsFunc(strings.TrimLeft(rest, " "), unicode.IsSpace) {
			return nil
		}
		prefix := strings.TrimLeft(rest, " ")
		var out []string
		for _, n := range names {
			if strings.HasPrefix(n, prefix) {
				out = append(out, "/send "+n+" ")
			}
		}
		return out
	}
	if strings.ContainsFunc(line, unicode.IsSpace) {
		return nil
	}
	var out []string
	for _, w := range commandWords {
		if strings.HasPrefix(w, line) {
			out = append(out, w)
		}
	}
	return out
}

// historyEntry is what a typed line leaves in the input history (saved
// to disk): a /join keeps its room and drops its secret.
func historyEntry(line string) string {
	trimmed := strings.TrimSpace(line)
	if word, rest := cut(trimmed); word == "/join" {
		if name, secret := cut(rest); secret != "" {
			return "/join " + name
		}
	}
	return line
}
