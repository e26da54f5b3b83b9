package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/parlance-chat/parlance/netsim"
)

// roomLANBody has five members on one LAN join a room and post twice
// each, all in the same instants: each member's room links dial the four
// others at once, from goroutines the bubble runs in any order.
func roomLANBody(t *testing.T, c *cluster) {
	const n, room = 5, "#same"
	peers, _ := roomOnLAN(t, c, n, room)
	for i := range 2 {
		for _, p := range peers {
			postRoom(t, p, fmt.Sprintf("line %d from %s", i, p.Nick()))
		}
		c.nw.RunFor(time.Second)
	}
	c.nw.RunFor(roomQuiet)
	for _, p := range peers {
		if got := len(shownRoom(p, room)); got != 2*(n-1) {
			t.Errorf("%v showed %d messages, want %d", p, got, 2*(n-1))
		}
	}
}

// The same seed gives the same network trace with rooms: times, hosts,
// ports, kinds, lengths and order of every packet. (Concurrent dials to
// different members used to get their ports in goroutine order.)
func TestRoomLANDeterminism(t *testing.T) {
	checkDeterminismSansPayload(t, netsim.SeedFromEnv(t), clusterBody(roomLANBody))
}

// The same, payload checksums included: every handshake of a simulated
// node draws its ephemeral key from a stream of its own (client/session's
// seededRand), so concurrent handshakes do not take their keys in
// goroutine order.
func TestRoomLANDeterminismPayloads(t *testing.T) {
	netsim.CheckDeterminism(t, netsim.SeedFromEnv(t), clusterBody(roomLANBody))
}
