package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/parlance-chat/parlance/client/internal/display"
	"github.com/parlance-chat/parlance/client/store"
)

// searchLimit bounds what /search shows.
const searchLimit = 50

// quote shortens text for a one-line notice about a message.
func quote(text string) string {
	const max = 40
	r := []rune(text)
	if len(r) > max {
		text = string(r[:max]) + "…"
	}
	return `"` + display.Sanitize(text) + `"`
}

func clock(t time.Time, loc *time.Location) string { return t.In(loc).Format("15:04:05") }

// stamp is a date and time, for lines that may be days old.
func stamp(t time.Time, loc *time.Location) string { return t.In(loc).Format("2006-01-02 15:04:05") }

// deliveredLine tells that a queued message reached its peer.
func deliveredLine(m store.Message, loc *time.Location) string {
	return fmt.Sprintf("Delivered to %s: %s (queued %s).", display.Sanitize(m.PeerNick), quote(m.Text), stamp(m.Sent, loc))
}

// expiredLine tells that a queued message will not be sent.
func expiredLine(m store.Message, loc *time.Location) string {
	return fmt.Sprintf("Expired: your message to %s of %s, %s, was not delivered in time and will not be sent.",
		display.Sanitize(m.PeerNick), stamp(m.Sent, loc), quote(m.Text))
}

// queueSummaryLine is said at start when messages wait: how many, for whom.
func queueSummaryLine(sum []store.PeerQueue) string {
	if len(sum) == 0 {
		return ""
	}
	total := 0
	parts := make([]string, len(sum))
	for i, q := range sum {
		total += q.Count
		parts[i] = fmt.Sprintf("%d for %s", q.Count, display.Sanitize(q.PeerNick))
	}
	return fmt.Sprintf("%d message(s) queued: %s. They go out when those peers are back; /queue lists them.", total, strings.Join(parts, ", "))
}

// queueText is /queue.
func queueText(q []store.Message, err error, loc *time.Location) string {
	if err != nil {
		return "Could not read the queue: " + display.Sanitize(err.Error())
	}
	if len(q) == 0 {
		return "No messages queued."
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d message(s) queued:", len(q))
	for _, m := range q {
		fmt.Fprintf(&b, "\n  [%s] to %s: %s (expires %s)", stamp(m.Sent, loc), display.Sanitize(m.PeerNick), display.Sanitize(m.Text), stamp(m.Expires, loc))
	}
	return b.String()
}

// historyLine shows one stored message as the chat shows messages:
// received ones as "[HH:MM:SS] bob: text", sent ones as
// "[HH:MM:SS] you → bob: text", marked when not encrypted or not (yet)
// delivered.
func historyLine(m store.Message, loc *time.Location, withDate bool) string {
	t := m.Received
	if m.Dir == store.Out {
		t = m.Sent
	}
	when := clock(t, loc)
	if withDate {
		when = stamp(t, loc)
	}
	var marks []string
	if !m.Encrypted {
		marks = append(marks, "plain")
	}
	switch {
	case m.Dir == store.Out && m.Status == store.Pending:
		marks = append(marks, "queued")
	case m.Dir == store.Out && m.Status != store.Delivered:
		marks = append(marks, m.Status.String())
	}
	mark := ""
	if len(marks) > 0 {
		mark = " (" + strings.Join(marks, ", ") + ")"
	}
	if m.Dir == store.Out {
		return fmt.Sprintf("[%s]%s you → %s: %s", when, mark, display.Sanitize(m.PeerNick), display.Sanitize(m.Text))
	}
	return fmt.Sprintf("[%s]%s %s: %s", when, mark, display.Sanitize(m.PeerNick), display.Sanitize(m.Text))
}

// historyText is /history: oldest first, with the date where it changes.
func historyText(name string, h []store.Message, err error, loc *time.Location) string {
	if err != nil {
		return "Could not read the history: " + display.Sanitize(err.Error())
	}
	if len(h) == 0 {
		return fmt.Sprintf("No messages with %s yet.", display.Sanitize(name))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Last %d message(s) with %s:", len(h), display.Sanitize(name))
	day := ""
	for _, m := range h {
		t := m.Received
		if m.Dir == store.Out {
			t = m.Sent
		}
		if d := t.In(loc).Format("2006-01-02"); d != day {
			day = d
			fmt.Fprintf(&b, "\n  -- %s --", d)
		}
		b.WriteString("\n  " + historyLine(m, loc, false))
	}
	return b.String()
}

// searchText is /search: newest first, each with its date.
func searchText(words string, r []store.Message, err error, loc *time.Location) string {
	if err != nil {
		return "Search failed: " + display.Sanitize(err.Error())
	}
	if len(r) == 0 {
		return fmt.Sprintf("No stored message has %s.", display.Sanitize(words))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d message(s) found, newest first:", len(r))
	if len(r) == searchLimit {
		fmt.Fprintf(&b, " (the first %d; add words to narrow it)", searchLimit)
	}
	for _, m := range r {
		b.WriteString("\n  " + historyLine(m, loc, true))
	}
	return b.String()
}
