module github.com/parlance-chat/parlance/bootstrap-server

go 1.25.0
