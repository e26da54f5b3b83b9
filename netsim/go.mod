module github.com/parlance-chat/parlance/netsim

go 1.25.0
