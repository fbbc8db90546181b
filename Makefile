# procmgr — the two commands a newcomer needs: `make demo` and `make test`.
GO      ?= go
BIN     := bin/procmgr
PYENV   := PYTHONPATH=$(CURDIR)/clients/python PROCMGR_BIN=$(CURDIR)/$(BIN)

.PHONY: all build demo test test-go test-python lint stress stress-parallel fuzz bench bench-smoke chaos clean
.PHONY: wheel wheels test-wheels

all: build

build:
	$(GO) build -o $(BIN) .

# The main job, end to end: tools start, crash, restart, stop, and a SIGKILLed
# host's tools are shown gone from /proc.
demo: build
	$(PYENV) python3 clients/python/examples/demo.py

# Everything CI runs: lint, the darwin build, Go unit and end-to-end tests
# under the race detector, and the Python client's tests. Every part runs
# whatever the others did; the last line is "N passed, N failed" over both
# suites (a failed lint or build counts as one failed).
test:
	@tests/scripts/test.sh

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	GOOS=darwin $(GO) build ./...
	# tests/ drives Linux (/proc, cgroups, pidfd): it is vetted for Linux only.
	GOOS=darwin $(GO) vet . ./rpc/... ./manager/... ./clients/go/...

test-go: build
	PROCMGR_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 8m ./...

test-python: build
	$(PYENV) python3 -m unittest discover -s clients/python/tests -t clients/python -v

# The flake hunt (docs/testing.md): make test N times under two CPU hogs and
# a neighbour procmgr session; stress-parallel runs make test in two clones
# of HEAD at once, ROUNDS times.
N      ?= 5
ROUNDS ?= 3
stress:
	@tests/scripts/stress.sh $(N)

stress-parallel:
	@tests/scripts/stress-parallel.sh $(ROUNDS)

# Every fuzz target of the module, one after the other, FUZZTIME each
# (CI: make fuzz FUZZTIME=10s).
FUZZTIME ?= 2m
fuzz:
	@FUZZTIME=$(FUZZTIME) tests/scripts/fuzz.sh

# Long chaos run (issues 4 and 16): 1000 trials in each mode (cgroup,
# --no-cgroup, an ordinary user); about 30 min on a busy 2-core machine.
chaos: build
	PROCMGR_BIN=$(CURDIR)/$(BIN) PROCMGR_CHAOS_TRIALS=1000 $(GO) test -count=1 -timeout 45m -run Chaos -v ./tests/

bench: build
	$(PYENV) python3 bench/run.py --out docs/benchmarks.md

bench-smoke: build
	$(PYENV) python3 bench/run.py --smoke

# A wheel for this machine in dist/ with the sidecar inside (issue 10); then
# `pip install dist/procmgr-*.whl` needs nothing else, not even Go.
BUILDPY := python3 clients/python/build_backend/procmgr_build.py
WHEEL_TARGETS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64

wheel:
	rm -f dist/procmgr-*
	GO=$(GO) $(BUILDPY) wheel --out dist

# Wheels for Linux and macOS on x86_64 and arm64, and an sdist (Go vendored).
wheels:
	rm -f dist/procmgr-*
	GO=$(GO) $(BUILDPY) wheel --out dist $(WHEEL_TARGETS:%=--target %)
	GO=$(GO) $(BUILDPY) sdist --out dist

# What `make wheels` makes: each wheel's tags and its sidecar's header bytes,
# and the sdist installing offline (CI runs this; cross-builds take a while cold).
test-wheels: build
	$(PYENV) python3 -m unittest discover -s clients/python/tests -t clients/python -p check_wheels.py -v

clean:
	rm -rf bin dist
