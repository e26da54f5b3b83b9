package chat

import (
	"time"

	"github.com/parlance-chat/parlance/client/room"
)

// ReceiveRoomLineForTest hands line to the rooms as if it had arrived on a
// session that proved fromKey (nickname nick), as serve does.
func (n *Node) ReceiveRoomLineForTest(fromKey, nick string, line []byte) error {
	rl, err := decodeRoomLine(line)
	if err != nil {
		return err
	}
	n.receiveRoom(fromKey, nick, []roomLine{rl})
	return nil
}

// RoomStatsForTest returns the counters of the log of the joined room
// name.
func (n *Node) RoomStatsForTest(name string) (room.Stats, error) {
	rs := n.rooms
	rs.mu.Lock()
	defer rs.mu.Unlock()
	j, err := rs.findLocked(name)
	if err != nil {
		return room.Stats{}, err
	}
	return j.log.Stats(), nil
}

// PostRoomUnsentForTest posts text to the joined room name as PostRoom
// does, but sends it to nobody: only anti-entropy can spread it.
func (n *Node) PostRoomUnsentForTest(name, text string) error {
	rs := n.rooms
	rs.mu.Lock()
	defer rs.mu.Unlock()
	j, err := rs.findLocked(name)
	if err != nil {
		return err
	}
	_, err = j.log.Next(time.Now(), text, n.Nickname())
	return err
}

// RoomRoundSendsForTest returns how many summaries the rounds of the
// joined room name sent.
func (n *Node) RoomRoundSendsForTest(name string) (int, error) {
	rs := n.rooms
	rs.mu.Lock()
	defer rs.mu.Unlock()
	j, err := rs.findLocked(name)
	if err != nil {
		return 0, err
	}
	return j.roundSends, nil
}

// RoomSentStateForTest returns how many members the joined room name
// keeps per-member send state for (summaries, answers, replies).
func (n *Node) RoomSentStateForTest(name string) (summed, sent, replied int, err error) {
	rs := n.rooms
	rs.mu.Lock()
	defer rs.mu.Unlock()
	j, err := rs.findLocked(name)
	if err != nil {
		return 0, 0, 0, err
	}
	return len(j.summed), len(j.sent), len(j.replied), nil
}
