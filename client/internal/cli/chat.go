package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/internal/display"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/protocol"
	"github.com/parlance-chat/parlance/protocol/registry"
)

// runChat starts the node and runs the chat until /quit, end of input, an
// interrupt or ctx's end.
func runChat(ctx context.Context, s Settings, env Env, logger *slog.Logger) int {
	ifi, err := lookupInterface(s.Config.Network.Interface)
	if err != nil {
		fmt.Fprintf(env.Stderr, "parlance: %v\n", err)
		return exitUsage
	}
	if s.ConfigFile != "" {
		logger.Info("configuration read", "file", s.ConfigFile)
	}
	prof, err := openProfile(s, env.Getenv)
	if err != nil {
		fmt.Fprintf(env.Stderr, "parlance: %v\n", err)
		return exitFailure
	}
	defer prof.store.Close()
	secs := func(n int64) time.Duration { return time.Duration(n) * time.Second }
	node, err := chat.Start(ctx, chat.Config{
		Network:             env.Network,
		Nickname:            s.Nickname,
		Mode:                chat.Mode(s.Config.Network.Mode),
		Interface:           ifi,
		AnnounceInterval:    secs(s.Config.Peer.AnnounceIntervalSecs),
		Timeout:             secs(s.Config.Peer.TimeoutSecs),
		BootstrapServers:    s.Config.Network.BootstrapServers,
		HeartbeatInterval:   secs(s.Config.Discovery.HeartbeatIntervalSecs),
		PeerTimeout:         secs(s.Config.Discovery.PeerTimeoutSecs),
		Identity:            prof.key,
		Trust:               prof.trust,
		RequireEncryption:   s.Config.Security.RequireEncryption,
		Store:               prof.store,
		MessageTTL:          time.Duration(s.Config.Messages.QueueTTLDays) * 24 * time.Hour,
		RoomHistoryMessages: int(s.Config.Rooms.HistoryMessages),
		RoomHistoryAge:      time.Duration(s.Config.Rooms.HistoryDays) * 24 * time.Hour,
		Logger:              logger,
	})
	if err != nil {
		fmt.Fprintf(env.Stderr, "parlance: cannot start: %v\n", err)
		return exitFailure
	}
	ui := &chatUI{
		node: node, env: env, scr: newScreen(env.Stdout, env.Terminal && env.Prompter == nil),
		now: env.Now, loc: env.Location, prof: prof, mode: s.Config.Network.Mode,
		plainTold: make(map[string]bool),
	}
	if ui.now == nil {
		ui.now = time.Now
	}
	if ui.loc == nil {
		ui.loc = time.Local
	}
	return ui.run(ctx, s)
}

type chatUI struct {
	node  *chat.Node
	env   Env
	scr   *screen
	now   func() time.Time
	loc   *time.Location
	prof  *profile
	mode  string
	sends sync.WaitGroup // /send commands in flight

	mu        sync.Mutex
	plainTold map[string]bool // peers told about once: "not encrypted"
}

type input struct {
	line string
	err  error
}

func (ui *chatUI) run(ctx context.Context, s Settings) int {
	prompter := ui.env.Prompter
	if prompter == nil {
		if ui.env.Terminal {
			prompter = newLinerPrompter(historyPath(ui.env.Getenv), func(line string) []string {
				return complete(line, append(peerNames(ui.node.Peers()), roomNames(ui.node.Rooms())...))
			})
		} else {
			prompter = newLinePrompter(ui.env.Stdin)
		}
	}
	mode := s.Config.Network.Mode
	ui.scr.Print(fmt.Sprintf("parlance %s: you are %s (%s mode, messages on port %d). Type /help for commands.",
		Version, display.Sanitize(s.Nickname), mode, ui.node.Port()))
	if ui.prof.created {
		ui.scr.Print(fmt.Sprintf("Created your identity key in %s. Your fingerprint: %s", display.Sanitize(ui.prof.identityFile), ui.node.Fingerprint()))
	}
	if sum, err := ui.prof.store.QueueSummary(ctx); err != nil {
		ui.scr.Print("Could not read the message queue: " + display.Sanitize(err.Error()))
	} else if line := queueSummaryLine(sum); line != "" {
		ui.scr.Print(line)
	}

	// Events are printed as they come, above the prompt.
	var wg sync.WaitGroup
	wg.Go(func() {
		for ev := range ui.node.Events() {
			if line, ok := ui.eventLine(ev); ok {
				ui.scr.Println(line)
			}
		}
	})

	// The reader prompts only when asked, so command output never lands
	// after a fresh prompt. It cannot be interrupted in a read (stdin has
	// no deadline): on an interrupt the process ends while it waits.
	ask := make(chan struct{})
	lines := make(chan input)
	go func() {
		for range ask {
			line, err := prompter.Prompt("> ")
			lines <- input{line, err}
			if err != nil && !isLineTooLong(err) {
				return
			}
		}
	}()

	status := exitOK
	quit := false
	for !quit {
		select {
		case ask <- struct{}{}:
		case <-ctx.Done():
			quit = true
			continue
		}
		var in input
		select {
		case in = <-lines:
		case <-ctx.Done():
			quit = true
			continue
		}
		switch {
		case in.err == nil:
			quit = ui.handle(ctx, in.line)
		case errors.Is(in.err, io.EOF), errors.Is(in.err, errInterrupted):
			quit = true
		case isLineTooLong(in.err):
			ui.scr.Print("Input ignored: " + in.err.Error())
		default:
			fmt.Fprintf(ui.env.Stderr, "parlance: reading input: %v\n", in.err)
			quit, status = true, exitFailure
		}
	}
	close(ask)
	ui.sends.Wait() // each ends in an outcome line, bounded by the send timeouts
	ui.node.Close() // says goodbye, closes Events
	wg.Wait()
	if err := prompter.Close(); err != nil {
		fmt.Fprintf(ui.env.Stderr, "parlance: %v\n", err)
	}
	return status
}

func isLineTooLong(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "input line longer")
}

// handle runs one input line; it reports whether to quit.
func (ui *chatUI) handle(ctx context.Context, line string) bool {
	cmd := ParseCommand(line)
	switch cmd.Kind {
	case CmdEmpty:
	case CmdQuit:
		return true
	case CmdHelp:
		ui.scr.Print(HelpText)
	case CmdPeers:
		ui.scr.Print(formatPeers(ui.node.PeerStatuses(), ui.now()))
	case CmdWhoami:
		ui.scr.Print(ui.whoami())
	case CmdVerify:
		ui.scr.Print(verifyText(ui.node.Verify(cmd.Name)))
	case CmdTrust:
		ui.scr.Print(trustText(ui.node.Trust(cmd.Name)))
	case CmdForget:
		ok, err := ui.node.Forget(cmd.Name)
		ui.scr.Print(forgetText(cmd.Name, ok, err))
	case CmdSend, CmdNotCommand:
		if cmd.Kind == CmdNotCommand || strings.HasPrefix(cmd.Name, "#") {
			ui.postRoom(ctx, cmd)
			return false
		}
		// Posted here, in input order, so that messages piped in keep
		// their order; the prompt comes back at once and the outcome is
		// printed above it when known.
		out, err := ui.node.Post(ctx, cmd.Name, cmd.Text)
		if err != nil {
			ui.scr.Print(sendOutcome(cmd.Name, chat.SendResult{}, err))
			return false
		}
		ui.sends.Go(func() {
			res, err := out.Wait(context.WithoutCancel(ctx))
			if note := ui.plainNote(res, err); note != "" {
				ui.scr.Println(note)
			}
			ui.scr.Println(sendOutcome(cmd.Name, res, err))
		})
	case CmdQueue:
		q, err := ui.prof.store.Queue(ctx)
		ui.scr.Print(queueText(q, err, ui.loc))
	case CmdHistory:
		if strings.HasPrefix(cmd.Name, "#") {
			h, err := ui.node.RoomHistory(ctx, cmd.Name, cmd.N)
			ui.scr.Print(roomHistoryText(cmd.Name, h, err, ui.loc))
			return false
		}
		h, err := ui.node.History(ctx, cmd.Name, cmd.N)
		ui.scr.Print(historyText(cmd.Name, h, err, ui.loc))
	case CmdJoin:
		info, err := ui.node.JoinRoom(ctx, cmd.Name, cmd.Text)
		ui.scr.Print(joinText(info, err))
	case CmdLeave:
		name := cmd.Name
		if name == "" {
			name = ui.node.CurrentRoom()
		}
		if name == "" {
			ui.scr.Print("You are in no room.")
			return false
		}
		if err := ui.node.LeaveRoom(ctx, name); err != nil {
			ui.scr.Print(roomErrText(err))
			return false
		}
		ui.scr.Print(fmt.Sprintf("Left %s.", display.Sanitize(name)))
	case CmdRooms:
		ui.scr.Print(roomsText(ui.node.Rooms()))
	case CmdMembers:
		info, err := ui.node.Room(cmd.Name)
		if err != nil {
			ui.scr.Print(roomErrText(err))
			return false
		}
		ui.scr.Print(membersText(info))
	case CmdSearch:
		r, err := ui.prof.store.Search(ctx, cmd.Text, searchLimit)
		ui.scr.Print(searchText(cmd.Text, r, err, ui.loc))
	default:
		ui.scr.Print(cmd.Msg)
	}
	return false
}

func (ui *chatUI) eventLine(ev chat.Event) (string, bool) {
	p := ev.Peer
	switch ev.Kind {
	case chat.EventMessage:
		m := ev.Message
		return display.MarkedMessageLine(m.Received, ui.loc, messageMark(m), senderName(ui.node.Peers(), m), m.Text), true
	case chat.EventRoomMessage:
		return roomLine(ev.Room, ui.loc), true
	case chat.EventRoomMember:
		return "* " + display.Sanitize(ev.Text), true
	case chat.EventSecurity:
		return "! " + display.Sanitize(ev.Text), true
	case chat.EventPeerJoined:
		return fmt.Sprintf("* %s joined (%s)", display.Sanitize(p.Nickname), p.Addr), true
	case chat.EventPeerLeft:
		return fmt.Sprintf("* %s left (%s)", display.Sanitize(p.Nickname), p.Addr), true
	case chat.EventPeerExpired:
		return fmt.Sprintf("* %s timed out (%s)", display.Sanitize(p.Nickname), p.Addr), true
	case chat.EventPeerRestarted:
		return fmt.Sprintf("* %s restarted (%s)", display.Sanitize(p.Nickname), p.Addr), true
	case chat.EventStatus:
		return "* " + display.Sanitize(ev.Text), true
	case chat.EventDelivered:
		return deliveredLine(ev.Stored, ui.loc), true
	case chat.EventExpired:
		return expiredLine(ev.Stored, ui.loc), true
	}
	return "", false
}

// senderName is how a message's sender is shown: its nickname, or, when
// several known peers share it, the selector of the one that wrote (found
// by instance id, else by address when only one of them is at that IP).
func senderName(peers []registry.Peer, m chat.Message) string {
	var same []registry.Peer
	for _, p := range peers {
		if p.Nickname == m.From {
			same = append(same, p)
		}
	}
	if m.Trust == trust.StateChanged && m.Key != "" {
		return m.From + "#" + protocol.KeyFingerprint(m.Key)[:7]
	}
	if len(same) < 2 {
		return m.From
	}
	var byIP []registry.Peer
	for _, p := range same {
		if m.Instance != "" && p.Instance == m.Instance {
			return registry.Selector(p)
		}
		if p.Addr.Addr() == m.Remote.Addr() {
			byIP = append(byIP, p)
		}
	}
	if len(byIP) == 1 {
		return registry.Selector(byIP[0])
	}
	return m.From + " (one of several)"
}

// peerNames lists what /send accepts for each peer: the nickname, or the
// nickname@address selector when several peers share it.
func peerNames(peers []registry.Peer) []string {
	count := map[string]int{}
	for _, p := range peers {
		count[p.Nickname]++
	}
	var names []string
	for _, p := range peers {
		if count[p.Nickname] > 1 {
			names = append(names, registry.Selector(p))
		} else {
			names = append(names, p.Nickname)
		}
	}
	return names
}

// formatPeers is /peers: one line per peer, nicknames shared by several
// peers shown as the selector that picks each, with the key's short
// fingerprint, its trust state, how it was found and, once a session ran,
// its path (direct or relayed).
func formatPeers(peers []chat.PeerStatus, now time.Time) string {
	if len(peers) == 0 {
		return "No peers discovered yet."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d peer(s):\n", len(peers))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	regs := make([]registry.Peer, len(peers))
	for i, p := range peers {
		regs[i] = p.Peer
	}
	names := peerNames(regs)
	for i, p := range peers {
		how := p.Source.String()
		if p.Instance == "" {
			how += ", original client"
		}
		fp := "-"
		if p.Fingerprint != "" {
			fp = p.Fingerprint[:7]
		}
		if p.Path != "" {
			how += ", " + p.Path
		}
		ago := max(0, int(now.Sub(p.LastSeen).Seconds()))
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%ds ago\n", display.Sanitize(names[i]), fp, p.Trust, p.Addr, how, ago)
	}
	tw.Flush()
	return strings.TrimRight(b.String(), "\n")
}

// sendOutcome is the one line a /send prints.
func sendOutcome(name string, res chat.SendResult, err error) string {
	name = display.Sanitize(name)
	var amb *registry.AmbiguousError
	switch {
	case err == nil && res.Status == chat.Delivered:
		return fmt.Sprintf("Delivered to %s.", name)
	case err == nil && res.Status == chat.Queued:
		nick := display.Sanitize(res.Peer.Nickname)
		if nick == "" {
			nick = name
		}
		return fmt.Sprintf("Queued for %s: will be delivered when %s is back.", nick, nick)
	case errors.Is(err, chat.ErrExpired):
		return fmt.Sprintf("Expired: the message to %s waited its whole time in the queue and will not be sent.", name)
	case errors.Is(err, store.ErrDiskFull), errors.Is(err, store.ErrClosed):
		return fmt.Sprintf("Not sent to %s: %s.", name, display.Sanitize(err.Error()))
	case err == nil:
		return fmt.Sprintf("Sent to %s (an original client: it cannot confirm delivery).", name)
	case errors.As(err, &amb):
		sel := make([]string, len(amb.Candidates))
		for i, p := range amb.Candidates {
			sel[i] = display.Sanitize(registry.Selector(p))
		}
		return fmt.Sprintf("Not sent: %d peers are called %s: %s. Pick one, e.g. /send %s <message>",
			len(sel), name, strings.Join(sel, ", "), sel[0])
	case errors.Is(err, chat.ErrKeyChanged), errors.Is(err, chat.ErrDowngrade),
		errors.Is(err, chat.ErrUnencrypted), errors.Is(err, chat.ErrKeyMismatch):
		return fmt.Sprintf("Not sent to %s: %s.", name, display.Sanitize(strings.TrimPrefix(err.Error(), "chat: ")))
	case errors.Is(err, registry.ErrUnknownPeer):
		return fmt.Sprintf("Not sent: no peer called %s. /peers lists the peers found.", name)
	case errors.Is(err, chat.ErrRefused):
		return fmt.Sprintf("Not sent to %s: connection refused; the peer may have quit.", name)
	case errors.Is(err, chat.ErrTimeout):
		return fmt.Sprintf("Not confirmed by %s: timed out (%s); the message may not have arrived.", name, display.Sanitize(err.Error()))
	case errors.Is(err, chat.ErrBroken):
		return fmt.Sprintf("Not confirmed by %s: the connection was lost (%s); the message may not have arrived.", name, display.Sanitize(err.Error()))
	case errors.Is(err, chat.ErrTooLong):
		return fmt.Sprintf("Not sent: %s.", display.Sanitize(err.Error()))
	default:
		return fmt.Sprintf("Not sent to %s: %s.", name, display.Sanitize(err.Error()))
	}
}
