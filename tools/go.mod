module github.com/parlance-chat/parlance/tools

go 1.25.0
