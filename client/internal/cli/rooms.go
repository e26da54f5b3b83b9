package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/internal/display"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/protocol"
)

// postRoom posts a /send #room or a plain line (to the current room).
func (ui *chatUI) postRoom(ctx context.Context, cmd Command) {
	name, text := cmd.Name, cmd.Text
	if cmd.Kind == CmdNotCommand {
		name = ""
		if ui.node.CurrentRoom() == "" {
			ui.scr.Print(cmd.Msg)
			return
		}
	}
	p, err := ui.node.PostRoom(ctx, name, text)
	if err != nil {
		ui.scr.Print(roomErrText(err))
		return
	}
	line := roomLine(p.Message, ui.loc)
	if p.Members == 0 {
		line += "  (nobody else here now: members get it when they are back)"
	}
	ui.scr.Print(line)
}

// roomLine shows a room message: "[HH:MM:SS] #room alice: text", with
// marks after the room's name; a nickname pinned to another key is shown
// with the writer's fingerprint, so it cannot pass for its owner.
func roomLine(m chat.RoomMessage, loc *time.Location) string {
	from := m.Nick
	var marks []string
	if m.Own {
		from = "you"
	}
	if m.Trust == trust.StateChanged {
		from += "#" + protocol.KeyFingerprint(m.Author)[:7]
		marks = append(marks, "not the "+m.Nick+" you know")
	}
	if m.InvalidNick {
		marks = append(marks, "invalid name")
	}
	if m.Late {
		marks = append(marks, "late")
	}
	if m.Unmet > 0 {
		marks = append(marks, fmt.Sprintf("%d earlier message(s) missing", m.Unmet))
	}
	mark := m.Room
	if len(marks) > 0 {
		mark += " (" + strings.Join(marks, ", ") + ")"
	}
	t := m.Received
	if m.Own {
		t = m.Sent
	}
	return display.MarkedMessageLine(t, loc, mark, from, m.Text)
}

func roomErrText(err error) string {
	switch {
	case errors.Is(err, chat.ErrNoRoom):
		return "You are in no room: /join #room first, or /send #room <message>."
	case errors.Is(err, chat.ErrRoomRate), errors.Is(err, chat.ErrTooLong), errors.Is(err, chat.ErrNotInRoom), errors.Is(err, chat.ErrTooManyRooms):
		return "Not sent: " + display.Sanitize(strings.TrimPrefix(err.Error(), "chat: ")) + "."
	default:
		return display.Sanitize(err.Error())
	}
}

func joinText(info chat.RoomInfo, err error) string {
	if err != nil {
		return "Could not join: " + display.Sanitize(strings.TrimPrefix(err.Error(), "chat: "))
	}
	kind := "public room"
	if info.Private {
		kind = "private room"
	}
	who := "nobody else here yet"
	if n := len(info.Members); n > 0 {
		who = fmt.Sprintf("%d other member(s): %s", n, memberNames(info))
	}
	return fmt.Sprintf("Joined %s (%s, %s). Lines without / now go to %s.", info.Name, kind, who, info.Name)
}

func memberNames(info chat.RoomInfo) string {
	names := make([]string, len(info.Members))
	for i, m := range info.Members {
		names[i] = display.Sanitize(m.Nickname) + "#" + protocol.KeyFingerprint(m.Key)[:7]
	}
	return strings.Join(names, ", ")
}

func roomsText(rooms []chat.RoomInfo) string {
	if len(rooms) == 0 {
		return "You are in no room. /join #room joins one."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d room(s):", len(rooms))
	for _, r := range rooms {
		cur := ""
		if r.Current {
			cur = ", current"
		}
		kind := "public"
		if r.Private {
			kind = "private"
		}
		fmt.Fprintf(&b, "\n  %s  (%s%s) %d other member(s)", r.Name, kind, cur, len(r.Members))
	}
	return b.String()
}

func membersText(info chat.RoomInfo) string {
	if len(info.Members) == 0 {
		return fmt.Sprintf("Nobody else is in %s now.", info.Name)
	}
	return fmt.Sprintf("%d other member(s) of %s: %s", len(info.Members), info.Name, memberNames(info))
}

// roomHistoryText is /history #room: oldest first, with the date where it
// changes.
func roomHistoryText(name string, h []chat.RoomMessage, err error, loc *time.Location) string {
	if err != nil {
		return roomErrText(err)
	}
	if len(h) == 0 {
		return fmt.Sprintf("No messages in %s yet.", display.Sanitize(name))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Last %d message(s) in %s:", len(h), display.Sanitize(h[0].Room))
	day := ""
	for _, m := range h {
		t := m.Received
		if m.Own {
			t = m.Sent
		}
		if d := t.In(loc).Format("2006-01-02"); d != day {
			day = d
			fmt.Fprintf(&b, "\n  -- %s --", d)
		}
		b.WriteString("\n  " + roomLine(m, loc))
	}
	return b.String()
}

// roomNames lists the joined rooms' names, for completion.
func roomNames(rooms []chat.RoomInfo) []string {
	names := make([]string, len(rooms))
	for i, r := range rooms {
		names[i] = r.Name
	}
	return names
}
