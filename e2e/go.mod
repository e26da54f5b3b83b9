module github.com/parlance-chat/parlance/e2e

go 1.26.0

require github.com/parlance-chat/parlance/protocol v0.0.0

require (
	github.com/gorilla/websocket v1.5.3
	github.com/parlance-chat/parlance/client v0.0.0
	github.com/parlance-chat/parlance/netsim v0.0.0
	golang.org/x/sys v0.50.0
)

require golang.org/x/net v0.62.0 // indirect

replace github.com/parlance-chat/parlance/protocol => ../protocol

replace github.com/parlance-chat/parlance/client => ../client

replace github.com/parlance-chat/parlance/bootstrap-server => ../bootstrap-server

replace github.com/parlance-chat/parlance/netsim => ../netsim
