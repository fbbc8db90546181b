// Package micro holds Go microbenchmarks that split the sidecar's costs into
// their parts, for profiling where a row of bench/run.py misses its goal:
//
//	go test -run '^$' -bench . -benchtime 2000x ./bench/micro
//	go test -run '^$' -bench RPC -cpuprofile /tmp/rpc.prof ./bench/micro && go tool pprof -top /tmp/rpc.prof
//
// They are benchmarks, not tests: `go test ./...` compiles them and runs
// nothing, and no figure is asserted. See docs/benchmarks.md for what they
// showed.
package micro
