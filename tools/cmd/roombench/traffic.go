package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/parlance-chat/parlance/tools/internal/procstat"
)

// snap is the workers' counters and the machine's at one moment.
type snap struct {
	at   time.Time
	ws   []line
	ns   nsCounters
	busy float64 // the machine's busy CPU seconds
	ours float64 // CPU seconds of this process and the workers
}

func (c *coord) snapshot(ctx context.Context) (snap, error) {
	ls, err := c.askAll(ctx, "stats", "stats")
	if err != nil {
		return snap{}, err
	}
	s := snap{at: time.Now(), ws: ls}
	s.ns, err = readNS()
	if err != nil {
		fmt.Fprintf(c.stderr, "roombench: %v\n", err)
	}
	s.busy, _, _ = procstat.MachineBusy()
	pids := map[int]bool{}
	for _, l := range ls {
		if !pids[l.Int("pid")] {
			pids[l.Int("pid")] = true
			s.ours += l.Float("cpu")
		}
	}
	if !pids[os.Getpid()] {
		self, _ := procstat.CPUSeconds(os.Getpid())
		s.ours += self
	}
	return s, nil
}

func (s snap) sum(k string) int64 {
	var t int64
	for _, l := range s.ws {
		t += l.Int64(k)
	}
	return t
}

// delta is the change of s's counters since a.
type delta struct {
	wall                           time.Duration
	dials, accepts, werrs          int64
	dialW, dialR, accW, accR       int64
	udpOut, udpOutB, udpIn, udpInB int64
	ns                             nsCounters
	ours, others                   float64
}

func (s snap) since(a snap) delta {
	d := func(k string) int64 { return s.sum(k) - a.sum(k) }
	wall := s.at.Sub(a.at)
	ours := s.ours - a.ours
	return delta{
		wall: wall, dials: d("dials"), accepts: d("accepts"), werrs: d("werrs"),
		dialW: d("dialw"), dialR: d("dialr"), accW: d("accw"), accR: d("accr"),
		udpOut: d("udpout"), udpOutB: d("udpoutb"), udpIn: d("udpin"), udpInB: d("udpinb"),
		ns: s.ns.sub(a.ns), ours: ours, others: max(0, s.busy-a.busy-ours),
	}
}

// tcp is the TCP payload both ways: every connection counted once, at
// its dialling end.
func (d delta) tcp() int64 { return d.dialW + d.dialR }

func (c *coord) printTraffic(prefix string, d delta, per float64, perWhat string) {
	w := c.stdout
	fmt.Fprintf(w, "%sTCP payload on the room links %s (written by the dialling side %s, by the accepting side %s; %d connections opened)",
		prefix, size(d.tcp()), size(d.dialW), size(d.dialR), d.dials)
	if per > 0 {
		fmt.Fprintf(w, " = %.0f bytes %s", float64(d.tcp())/per, perWhat)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%sIP on lo, unicast (TCP/IP headers and ACKs included): %s in %d TCP segments", prefix, size(d.ns.unicast()), d.ns.tcpSegs)
	if per > 0 {
		fmt.Fprintf(w, " = %.0f bytes %s", float64(d.ns.unicast())/per, perWhat)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%sdiscovery datagrams (not counted above): %d sent (%s), %d received by the nodes (%s); IP multicast on lo %s\n",
		prefix, d.udpOut, size(d.udpOutB), d.udpIn, size(d.udpInB), size(d.ns.mcastOut))
	fmt.Fprintf(w, "%sCPU: %.2f s of the machine's %.2f in %.2f s: the nodes and this tool %.2f s, other processes %.2f s\n",
		prefix, d.ours+d.others, d.wall.Seconds()*float64(runtime.NumCPU()), d.wall.Seconds(), d.ours, d.others)
}

func size(b int64) string {
	switch {
	case b >= 10<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 10<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
