package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// relayDelay is client/chat.RelayDelay: a first session tries the relay
// this long after its direct attempts started.
const relayDelay = 250 * time.Millisecond

// traceEvent is the part of a netsim trace line that punchTrace reads.
type traceEvent struct {
	T    int64  `json:"t"`
	Ev   string `json:"ev"`
	Kind string `json:"kind"`
	Src  string `json:"src"`
	Dst  string `json:"dst"`
}

// punchTrace reads the netsim trace of one TestNATMatrix cell (two
// clients that register one after the other, then open sessions one at
// a time) and prints, for each relayed session, when it became direct.
//
// The client SYNs to the server after the two control connections come
// in pairs, one per relayed session: the opener's relay WebSocket, then
// the accepter's. The opener dialled it relayDelay after its Send (the
// trace logs a SYN when it arrives, latency later, rounded up to the
// millisecond). Its session became direct when the opener closed that
// relay WebSocket (its FIN to the server) after a TCP simultaneous open:
// punchOnce swaps the connection and drops the relayed one at once.
func punchTrace(r io.Reader, out io.Writer, latency time.Duration, serverPort int) error {
	type sockEv struct {
		t   time.Duration
		src string
	}
	var syns, fins []sockEv
	var opens []time.Duration
	suffix := ":" + strconv.Itoa(serverPort)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e traceEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		t := time.Duration(e.T)
		switch {
		case e.Ev == "tcp-simultaneous-open":
			opens = append(opens, t)
		case e.Ev == "tcp" && e.Kind == "syn" && strings.HasSuffix(e.Dst, suffix):
			syns = append(syns, sockEv{t, e.Src})
		case e.Ev == "tcp" && e.Kind == "fin" && strings.HasSuffix(e.Dst, suffix):
			fins = append(fins, sockEv{t, e.Src})
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(syns) < 2 {
		return fmt.Errorf("trace: %d connections to the server, want the two control connections at least", len(syns))
	}
	if len(syns) == 2 {
		fmt.Fprintln(out, "no relayed session")
	}
	for i := 2; i < len(syns); i += 2 {
		opener := syns[i]
		send := opener.t - latency - relayDelay
		line := fmt.Sprintf("relayed session %d (opener %s): Send at %v", i/2, opener.src, send.Round(time.Millisecond))
		var so time.Duration
		for _, t := range opens {
			if t > opener.t {
				so = t
				break
			}
		}
		direct := time.Duration(0)
		if so > 0 {
			for _, f := range fins {
				if f.src == opener.src && f.t >= so {
					direct = f.t
					break
				}
			}
		}
		if direct == 0 {
			fmt.Fprintf(out, "%s; stays relayed (no simultaneous open then relay close)\n", line)
			continue
		}
		fmt.Fprintf(out, "%s; simultaneous open %v after Send; direct (relay closed) %v after Send\n",
			line, (so - send).Round(time.Millisecond), (direct - send).Round(time.Millisecond))
	}
	return nil
}
