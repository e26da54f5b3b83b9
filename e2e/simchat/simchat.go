// Package simchat runs real Parlance chat nodes (client/chat) on the hosts
// of a simulated network (netsim) and records what each instance shows
// (client/chat/chattest). It is the part the e2e/sim tests and the
// simulate tool share: starting a node, quitting it as a user does,
// crashing its host and restarting it as a new instance.
//
// Every node's randomness is drawn from its Group's seeds, which derive
// from the network's seed, so a run is a function of that seed as long as
// the caller starts, stops and restarts nodes in the same order.
package simchat

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/parlance-chat/parlance/client/chat"
	"github.com/parlance-chat/parlance/client/chat/chattest"
	"github.com/parlance-chat/parlance/client/store"
	"github.com/parlance-chat/parlance/client/trust"
	"github.com/parlance-chat/parlance/netsim"
)

// Group is the set of nodes of one scenario on one simulated network. It
// must be made inside the network's bubble, and used from one goroutine.
type Group struct {
	nw    *netsim.Network
	seeds *rand.Rand
	t0    time.Time // the bubble's clock when the network was made
	nodes []*Node
	// storeDir, if set, holds the nodes' message stores as files.
	storeDir string
}

// NewGroup returns an empty group on nw.
func NewGroup(nw *netsim.Network) *Group {
	return &Group{
		nw:    nw,
		seeds: rand.New(rand.NewPCG(nw.Seed(), 0x5eed)),
		t0:    time.Now().Add(-nw.Now()),
	}
}

// cryptoRand returns a reader for keys drawn from the group's seeds, so
// that keys and session bytes replay with the seed. Only a simulation
// does this: real nodes use crypto/rand.
func (g *Group) cryptoRand() io.Reader {
	var seed [32]byte
	for i := range 4 {
		binary.LittleEndian.PutUint64(seed[8*i:], g.seeds.Uint64())
	}
	return rand.NewChaCha8(seed)
}

// Seeds is the group's source of randomness, derived from the network's
// seed. Every start of a node draws from it; scenarios may draw their own
// choices from it too.
func (g *Group) Seeds() *rand.Rand { return g.seeds }

// At converts a node's clock reading to simulated time since the network
// was made.
func (g *Group) At(tm time.Time) time.Duration { return tm.Sub(g.t0) }

// UseFileStores makes the nodes started from now on keep their message
// stores in SQLite files in dir (one per host and nickname) rather than
// in memory. Such a store is closed and opened again when its node
// restarts, so the new instance reads back what was committed, as a
// program restarted on its profile does.
func (g *Group) UseFileStores(dir string) { g.storeDir = dir }

// Start starts a node called nick on h. tweak adjusts its config (mode,
// timeouts) on this start and on every restart.
//
// The node keeps one identity key, one known-peers store and one message
// store (all in memory, the message store in a file after UseFileStores)
// across restarts, as a profile on disk does; the
// message store outlives crashes too, holding what was committed (a real
// crash may also lose what was submitted and not yet committed, which was
// never reported to anyone: the real-process tests cover that). Close
// closes the message stores.
func (g *Group) Start(h *netsim.Host, nick string, tweak ...func(*chat.Config)) (*Node, error) {
	var path string
	if g.storeDir != "" {
		path = filepath.Join(g.storeDir, h.Name()+"-"+nick+".db")
	}
	st, err := openStore(path)
	if err != nil {
		return nil, err
	}
	n := &Node{g: g, host: h, nick: nick, tweak: tweak, trust: trust.Memory(), store: st, storePath: path}
	_, n.identity, _ = ed25519.GenerateKey(g.cryptoRand())
	if err := n.boot(); err != nil {
		st.Close()
		return nil, err
	}
	g.nodes = append(g.nodes, n)
	return n, nil
}

// Close quits every running node and closes every node's message store.
// A group must be closed before its network's bubble ends.
func (g *Group) Close() {
	g.QuitAll()
	for _, n := range g.nodes {
		n.store.Close()
	}
}

// QuitAll quits every running node, in the order they were started.
func (g *Group) QuitAll() {
	for _, n := range g.nodes {
		if n.Up() {
			n.Quit()
		}
	}
}

// Node is one chat node on its host, across restarts.
type Node struct {
	g     *Group
	host  *netsim.Host
	nick  string
	tweak []func(*chat.Config)

	identity ed25519.PrivateKey
	trust    *trust.Store
	store    *store.Store
	// storePath is the store's file, "" for one in memory.
	storePath string

	node *chat.Node         // nil while down
	rec  *chattest.Recorder // the current (or last) instance's events
	recs []*chattest.Recorder
}

func (n *Node) boot() error {
	cfg := chat.Config{
		Network:    n.host,
		Nickname:   n.nick,
		Rand:       rand.New(rand.NewPCG(n.g.seeds.Uint64(), n.g.seeds.Uint64())),
		Identity:   n.identity,
		Trust:      n.trust,
		Store:      n.store,
		CryptoRand: n.g.cryptoRand(),
	}
	for _, f := range n.tweak {
		f(&cfg)
	}
	cn, err := chat.Start(n.host.Context(), cfg)
	if err != nil {
		return fmt.Errorf("start %s on %s: %w", n.nick, n.host.Name(), err)
	}
	n.node = cn
	n.rec = chattest.Record(cn)
	n.recs = append(n.recs, n.rec)
	return nil
}

// Host is the host the node runs on.
func (n *Node) Host() *netsim.Host { return n.host }

// Nick is the node's nickname.
func (n *Node) Nick() string { return n.nick }

// Store is the node's message store, kept across restarts.
func (n *Node) Store() *store.Store { return n.store }

// Chat is the current instance, nil while the node is down.
func (n *Node) Chat() *chat.Node { return n.node }

// Rec holds the events of the current (or, while down, the last) instance.
func (n *Node) Rec() *chattest.Recorder { return n.rec }

// Recs holds the events of every instance, oldest first.
func (n *Node) Recs() []*chattest.Recorder { return n.recs }

// Up reports whether the node runs.
func (n *Node) Up() bool { return n.node != nil }

// Quit closes the node the way a user's /quit does: it says goodbye.
func (n *Node) Quit() {
	n.node.Close()
	<-n.rec.Done()
	n.node = nil
}

// Crash cuts the power of the node's host: no goodbye, sockets gone, the
// streams of its peers reset.
func (n *Node) Crash() {
	n.host.Crash()
	n.node.Close() // reaps the node's goroutines; its context is gone already
	<-n.rec.Done()
	n.node = nil
}

// Restart brings a stopped node back on its host with the same nickname
// (and, since a fresh host hands out the same ephemeral ports, the same
// address): a new instance.
func (n *Node) Restart() error {
	if !n.host.Up() {
		n.host.Restart()
	}
	if n.storePath != "" {
		if err := n.store.Close(); err != nil {
			return fmt.Errorf("restart %s: close its store: %w", n.nick, err)
		}
		st, err := openStore(n.storePath)
		if err != nil {
			return fmt.Errorf("restart %s: %w", n.nick, err)
		}
		n.store = st
	}
	return n.boot()
}

// openStore opens the store file at path, or one in memory if path is
// "", with the chat's fold wait. A file is not synced: a simulated crash
// is a process's crash, which loses nothing committed.
func openStore(path string) (*store.Store, error) {
	if path == "" {
		return store.OpenMemory(store.Options{FoldWait: store.DefaultFoldWait})
	}
	return store.Open(path, store.Options{FoldWait: store.DefaultFoldWait, NoSync: true})
}

// Addr is where the running node accepts messages.
func (n *Node) Addr() netip.AddrPort { return netip.AddrPortFrom(n.host.IP(), n.node.Port()) }

// Instance is the running node's instance.
func (n *Node) Instance() string { return n.node.Instance() }

func (n *Node) String() string { return n.nick + "@" + n.host.Name() }

// Entry is one line of a /peers view.
type Entry struct {
	Nick, Addr, Instance string
}

func (e Entry) String() string { return e.Nick + "@" + e.Addr + "#" + e.Instance }

// Entry is how the other nodes should list the running node.
func (n *Node) Entry() Entry { return Entry{n.nick, n.Addr().String(), n.Instance()} }

// View is what the running node lists, sorted by SortEntries.
func (n *Node) View() []Entry {
	var v []Entry
	for _, rp := range n.node.Peers() {
		v = append(v, Entry{rp.Nickname, rp.Addr.String(), rp.Instance})
	}
	SortEntries(v)
	return v
}

// SortEntries sorts v by the entries' String.
func SortEntries(v []Entry) {
	slices.SortFunc(v, func(a, b Entry) int { return strings.Compare(a.String(), b.String()) })
}
