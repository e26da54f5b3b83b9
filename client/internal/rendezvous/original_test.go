package rendezvous_test

import (
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parlance-chat/parlance/protocol"
)

func (o *originalServer) add(p protocol.PeerInfo) {
	o.mu.Lock()
	o.peers = append(o.peers, p)
	o.mu.Unlock()
}

func (o *originalServer) remove(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, p := range o.peers {
		if p.PeerID == id {
			o.peers = append(o.peers[:i], o.peers[i+1:]...)
			return
		}
	}
}

// received is a register as the server decoded it, and when.
type received struct {
	msg *protocol.Register
	at  time.Time
}

func (o *originalServer) received() []received {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]received(nil), o.registers...)
}

func (o *originalServer) requests() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.lists
}

func (o *originalServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		m, err := protocol.DecodeClientMessage(b)
		if err != nil {
			continue
		}
		var reply protocol.ServerMessage
		o.mu.Lock()
		switch m := m.(type) {
		case *protocol.Register:
			o.registers = append(o.registers, received{m, time.Now()})
			o.peers = append(o.peers, protocol.PeerInfo{PeerID: "self", Nickname: m.Nickname, PublicAddr: "192.0.2.1:4001", LocalAddr: m.LocalAddr})
			reply = &protocol.Registered{PeerID: "self", PublicAddr: "192.0.2.1:4001"}
		case *protocol.ListPeers:
			o.lists++
			reply = &protocol.PeerList{Peers: append([]protocol.PeerInfo(nil), o.peers...)}
		}
		hangUp := o.hangUp
		o.mu.Unlock()
		if reply != nil {
			b, _ := protocol.EncodeServerMessage(reply)
			ws.WriteMessage(websocket.TextMessage, b)
		}
		if _, ok := m.(*protocol.Register); ok && hangUp {
			return
		}
	}
}
