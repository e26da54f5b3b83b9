// Package simulate runs named netsim scenarios and summarises them; see
// tools/cmd/simulate.
//
// The lan, lossy, partition and churn scenarios run simple announcing
// peers (netsim/scenario), a stand-in for the product. The chat-*
// scenarios run the real product: chat.Node from client/chat on every
// host and, in chat-internet, the real rendezvous server of
// bootstrap-server.
//
//   - chat-lan: N nodes start within a second on one LAN; the summary says
//     when every node listed every other (simulated ms after the last
//     start), then every node messages the next three: sent, delivered and
//     failed counts, and whether each delivered message arrived exactly
//     once.
//   - chat-churn: as chat-lan, then a tenth of the nodes quit (goodbye) and
//     a tenth crash; when the others dropped each (a crash relative to the
//     last announce heard plus the timeout), and when a restarted node was
//     listed again.
//   - chat-partition: the LAN splits in two halves for 20 s and heals;
//     sends across are queued at the sender (each side keeps the other's
//     key), each side drops the other after the timeout, the views
//     converge after the heal and the queued messages arrive, once each.
//   - chat-internet: nodes on segments of their own find each other only
//     through the rendezvous server, which crashes and restarts empty; when
//     each node registered again.
//
// Every run prints the seed, the simulated and wall time, the trace's line
// count and hash; the same seed prints the same hash. In chat-internet,
// gorilla/websocket masks client frames with keys from its global
// math/rand, which cannot be seeded, so the hash printed there is over the
// trace with the payload checksums removed.
package simulate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
	"github.com/parlance-chat/parlance/netsim/scenario"
)

// Config is one simulation.
type Config struct {
	Scenario string
	Peers    int
	Seed     uint64
	// Duration is the simulated time of the classic scenarios, and the
	// steady state of chat-lan (counted from the last start). The other
	// chat scenarios run their phases for as long as they need.
	Duration time.Duration
	Trace    io.Writer // nil: no trace
}

// Scenarios names every scenario with a one-line description.
var Scenarios = map[string]string{
	"lan":            "simple peers announce on one LAN and learn each other",
	"lossy":          "as lan, with 20% loss, 50 ms jitter and 5% duplication",
	"partition":      "the LAN of simple peers splits in two halves from 1/3 to 2/3 of the run",
	"churn":          "a tenth of the simple peers crash at 1/3 of the run and restart at 2/3",
	"chat-lan":       "real chat nodes start within a second on one LAN, discover each other and message the next three",
	"chat-churn":     "as chat-lan, then a tenth of the nodes quit, a tenth crash and one restarts",
	"chat-partition": "real chat nodes: the LAN splits for 20 s and heals; sends across are queued and arrive after the heal",
	"chat-internet":  "real chat nodes on separate segments meet through the real rendezvous server, which crashes and restarts",
}

// Names returns the scenarios' names, sorted.
func Names() []string {
	out := make([]string, 0, len(Scenarios))
	for k := range Scenarios {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Result is what a run printed, as facts.
type Result struct {
	Config
	Simulated  time.Duration // simulated time of the run
	Wall       time.Duration
	TraceLines int64
	// TraceHash is the SHA-256 of the trace; see HashNote.
	TraceHash string
	// HashNote, if set, says what TraceHash leaves out.
	HashNote string
	Lines    []string // the scenario's own summary lines
	Facts    Facts    // chat-* scenarios
}

// Run runs the scenario inside a synctest bubble, writes a summary to w
// and returns it.
func Run(t *testing.T, cfg Config, w io.Writer) (*Result, error) {
	if _, ok := Scenarios[cfg.Scenario]; !ok {
		return nil, fmt.Errorf("simulate: unknown scenario %q (known: %s)", cfg.Scenario, strings.Join(Names(), ", "))
	}
	isChat := strings.HasPrefix(cfg.Scenario, "chat-")
	switch {
	case cfg.Peers < 1:
		return nil, fmt.Errorf("simulate: -n %d: need at least one peer", cfg.Peers)
	case isChat && cfg.Peers > MaxChatNodes:
		return nil, fmt.Errorf("simulate: -n %d: the chat scenarios run at most %d nodes", cfg.Peers, MaxChatNodes)
	case cfg.Scenario == "chat-churn" && cfg.Peers < 3:
		return nil, fmt.Errorf("simulate: chat-churn needs at least 3 nodes")
	case isChat && cfg.Peers < 2:
		return nil, fmt.Errorf("simulate: %s needs at least 2 nodes", cfg.Scenario)
	}
	res := &Result{Config: cfg}
	opts := &netsim.Options{Trace: cfg.Trace}
	var sans *sansPayload
	if cfg.Scenario == "chat-internet" {
		sans = &sansPayload{h: sha256.New()}
		opts.Trace = sans
		if cfg.Trace != nil {
			opts.Trace = io.MultiWriter(cfg.Trace, sans)
		}
		res.HashNote = "over the trace without payload checksums: gorilla/websocket masks client frames with its own unseeded math/rand"
	}
	start := time.Now()
	hash := netsim.Run(t, cfg.Seed, opts, func(t *testing.T, n *netsim.Network) {
		var peers []*scenario.Peer
		if isChat {
			runChat(t, n, cfg, &res.Lines, &res.Facts)
		} else {
			res.Lines, peers = classic(n, cfg)
		}
		res.Simulated = n.Now()
		n.Close()
		if peers != nil {
			r := scenario.Summarize(peers)
			res.Lines = append(res.Lines, fmt.Sprintf("announces %d, decoded %d", r.Announces, r.Decoded))
		}
		st := n.Stats()
		var faults []string
		for k, v := range st.Faults {
			if v > 0 {
				faults = append(faults, fmt.Sprintf("%s=%d", k, v))
			}
		}
		sort.Strings(faults)
		res.Lines = append(res.Lines, fmt.Sprintf("network: %d datagrams, %d deliveries, %d stream segments; faults: %s",
			st.Datagrams, st.Deliveries, st.Segments, strings.Join(faults, " ")))
		res.TraceLines = n.TraceLines()
	})
	res.Wall = time.Since(start)
	res.TraceHash = hash
	if sans != nil {
		res.TraceHash = sans.sum()
	}
	if t.Failed() {
		return res, fmt.Errorf("simulate: the run failed")
	}
	res.print(w)
	return res, nil
}

func (r *Result) print(w io.Writer) {
	fmt.Fprintf(w, "scenario %s: %s\n", r.Scenario, Scenarios[r.Scenario])
	fmt.Fprintf(w, "peers %d, seed %d, simulated %v, wall %.2fs\n", r.Peers, r.Seed, r.Simulated.Round(time.Millisecond), r.Wall.Seconds())
	for _, l := range r.Lines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintf(w, "trace lines %d, trace hash %s\n", r.TraceLines, r.TraceHash)
	if r.HashNote != "" {
		fmt.Fprintf(w, "  (hash %s)\n", r.HashNote)
	}
}

var payloadSum = regexp.MustCompile(`,"sum":-?[0-9]+`)

// sansPayload hashes trace lines with their payload checksums removed.
type sansPayload struct {
	h    hash.Hash
	part []byte
}

func (s *sansPayload) Write(b []byte) (int, error) {
	s.part = append(s.part, b...)
	for {
		i := slices.Index(s.part, '\n')
		if i < 0 {
			break
		}
		s.h.Write(payloadSum.ReplaceAll(s.part[:i+1], nil))
		s.part = s.part[i+1:]
	}
	return len(b), nil
}

func (s *sansPayload) sum() string {
	s.h.Write(payloadSum.ReplaceAll(s.part, nil))
	s.part = nil
	return hex.EncodeToString(s.h.Sum(nil))
}

// classic runs one of the simple-peer scenarios; summarise the peers once
// the network is closed.
func classic(n *netsim.Network, cfg Config) ([]string, []*scenario.Peer) {
	var lines []string
	lan := n.AddSegment("lan")
	n.SetDefaultLink(netsim.Link{Latency: time.Millisecond})
	if cfg.Scenario == "lossy" {
		n.SetDefaultLink(netsim.Link{Latency: time.Millisecond, Jitter: 50 * time.Millisecond, Loss: 0.2, Duplicate: 0.05})
	}
	peers := scenario.StartAnnouncers(n, lan, scenario.Config{Peers: cfg.Peers, Expiry: 15 * time.Second})
	third := cfg.Duration / 3
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	switch cfg.Scenario {
	case "partition":
		time.Sleep(third)
		var a, b []*netsim.Host
		for i, p := range peers {
			if i < len(peers)/2 {
				a = append(a, p.Host)
			} else {
				b = append(b, p.Host)
			}
		}
		cut := n.Partition(a, b)
		time.Sleep(third)
		lines = append(lines, fmt.Sprintf("during the partition: %s", knownSummary(peers)))
		cut.Heal()
		time.Sleep(cfg.Duration - 2*third)
	case "churn":
		time.Sleep(third)
		victims := rng.Perm(len(peers))[:max(1, len(peers)/10)]
		slices.Sort(victims)
		for _, i := range victims {
			peers[i].Host.Crash()
		}
		time.Sleep(third)
		lines = append(lines, fmt.Sprintf("while %d peers are down: %s", len(victims), knownSummary(peers)))
		for _, i := range victims {
			peers[i].Host.Restart()
			peers[i].Start()
		}
		time.Sleep(cfg.Duration - 2*third)
	default:
		time.Sleep(cfg.Duration)
	}
	lines = append(lines, fmt.Sprintf("at the end: %s", knownSummary(peers)))
	return lines, peers
}

// knownSummary says how many peers each running peer knows: min, mean,
// max.
func knownSummary(peers []*scenario.Peer) string {
	lo, hi, sum, up := len(peers), 0, 0, 0
	for i, k := range scenario.Known(peers) {
		if !peers[i].Host.Up() {
			continue
		}
		lo, hi, sum, up = min(lo, k), max(hi, k), sum+k, up+1
	}
	return fmt.Sprintf("each of %d running peers knows min %d, mean %.1f, max %d of %d others",
		up, lo, float64(sum)/float64(max(up, 1)), hi, len(peers)-1)
}
