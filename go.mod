module procmgr

go 1.23

require (
	github.com/sourcegraph/jsonrpc2 v0.2.3
	golang.org/x/sys v0.30.0
)
