module github.com/parlance-chat/parlance/e2e

go 1.25.0
