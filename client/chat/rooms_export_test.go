package chat

import "github.com/parlance-chat/parlance/client/room"

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
