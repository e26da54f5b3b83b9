module github.com/parlance-chat/parlance/netsim

go 1.25.0

require github.com/gorilla/websocket v1.5.3
