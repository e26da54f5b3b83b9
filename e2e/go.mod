module github.com/parlance-chat/parlance/e2e

go 1.26.0

require github.com/parlance-chat/parlance/protocol v0.0.0

require github.com/gorilla/websocket v1.5.3

replace github.com/parlance-chat/parlance/protocol => ../protocol
