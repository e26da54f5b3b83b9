package chat

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
