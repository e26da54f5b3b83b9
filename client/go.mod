module github.com/parlance-chat/parlance/client

go 1.25.0
