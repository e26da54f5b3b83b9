module github.com/parlance-chat/parlance/protocol

go 1.25.0
