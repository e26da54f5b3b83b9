package chat

// SetRoomTagsForTest lets the external tests set a node's room
// membership tags as the rooms code does.
func (n *Node) SetRoomTagsForTest(tags []string) { n.setRoomTags(tags) }
