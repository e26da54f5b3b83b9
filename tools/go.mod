module github.com/parlance-chat/parlance/tools

go 1.25.0

require (
	github.com/gorilla/websocket v1.5.3
	github.com/parlance-chat/parlance/protocol v0.0.0
)

replace github.com/parlance-chat/parlance/protocol => ../protocol

require github.com/parlance-chat/parlance/netsim v0.0.0

replace github.com/parlance-chat/parlance/netsim => ../netsim
