package jsonrpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// admissions is the state the "ordered" method's admit step changes, as a
// create's reservation of its tag does.
type admissions struct {
	mu       sync.Mutex
	admitted map[string]bool
	undone   []string
}

func (a *admissions) has(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.admitted[key]
}

func (a *admissions) undoneKeys() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.undone...)
}

type orderedParams struct {
	Key   string `json:"key"`
	Fail  string `json:"fail"`  // "plain" or "rpc": admit returns such an error
	Panic bool   `json:"panic"` // admit panics
	Wait  bool   `json:"wait"`  // a long wait, blocked until h.block closes
}

func (p orderedParams) WaitsLong() bool { return p.Wait }

// registerOrdered adds "ordered" (HandleOrdered: admit records the key,
// undo removes it, f returns the key admit handed it) and "admitted" (an
// inline lookup of a key).
func registerOrdered(h *harness) {
	a := &h.admissions
	a.admitted = map[string]bool{}
	HandleOrdered(h.srv, "ordered", func(p orderedParams) (string, func(), error) {
		switch {
		case p.Panic:
			panic("admit broke")
		case p.Fail == "plain":
			return "", nil, errors.New("plain failure")
		case p.Fail == "rpc":
			return "", nil, Errorf(CodeInvalidParams, "invalid params: key %q refused", p.Key)
		}
		a.mu.Lock()
		a.admitted[p.Key] = true
		a.mu.Unlock()
		return "admitted " + p.Key, func() {
			a.mu.Lock()
			delete(a.admitted, p.Key)
			a.undone = append(a.undone, p.Key)
			a.mu.Unlock()
		}, nil
	}, func(ctx context.Context, p orderedParams, v string) (string, error) {
		if p.Wait {
			select {
			case <-h.block:
			case <-ctx.Done():
			}
		}
		return v, nil
	})
	HandleInline(h.srv, "admitted", func(_ context.Context, p orderedParams) (bool, error) { return a.has(p.Key), nil })
}

// What admit does is seen by every call read after it, though the call
// itself goes on off the reading goroutine.
func TestOrderedAdmitRunsInInputOrderBeforeLaterInlineCalls(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	var b strings.Builder
	const n = 200
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":"o%d","method":"ordered","params":{"key":"k%d","wait":true}}`+"\n", i, i)
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","id":"a%d","method":"admitted","params":{"key":"k%d"}}`+"\n", i, i)
	}
	h.send(t, b.String()) // in one write: the calls are all read before any f returns
	for i := 0; i < n; i++ {
		h.wantResult(t, fmt.Sprintf(`"a%d"`, i), "true")
	}
	close(h.block)
	got := map[string]bool{}
	for i := 0; i < n; i++ {
		rep, line := h.reply(t)
		if rep.Error != nil {
			t.Fatalf("ordered call failed: %s", line)
		}
		got[string(rep.ID)+" "+string(rep.Result)] = true
	}
	for i := 0; i < n; i++ {
		if want := fmt.Sprintf(`"o%d" "admitted k%d"`, i, i); !got[want] {
			t.Fatalf("no reply %s (f did not get what admit returned)", want)
		}
	}
}

// A call admitted but then refused as busy does not run: its undo does, by
// the time the refusal is answered.
func TestOrderedUndoRunsWhenTheCallIsRefusedAsBusy(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	h.fillWaits(t)
	h.send(t, `{"jsonrpc":"2.0","id":"over","method":"ordered","params":{"key":"x","wait":true}}`+"\n")
	h.wantError(t, CodeServerBusy, `"over"`, "long waits")
	if h.admissions.has("x") {
		t.Fatal("the refused call's admission was not undone")
	}
	if u := h.admissions.undoneKeys(); len(u) != 1 || u[0] != "x" {
		t.Fatalf("undone %q, want [x] once", u)
	}
	// Room again: the same call is admitted and runs.
	close(h.block)
	for i := 0; i < MaxWaitingCalls; i++ {
		h.reply(t)
	}
	waitFor(t, "the waits to end", func() bool { return h.srv.inflight.Load() == 0 })
	h.send(t, `{"jsonrpc":"2.0","id":"again","method":"ordered","params":{"key":"x","wait":true}}`+"\n")
	h.wantResult(t, `"again"`, "admitted x")
	if u := h.admissions.undoneKeys(); len(u) != 1 {
		t.Fatalf("undone %q after a call that ran, want [x] only", u)
	}
}

// An error from admit is the reply (an *Error as is, any other as -32603),
// and nothing is undone; a panic in admit is a -32603 and the connection
// goes on.
func TestOrderedAdmitErrorIsTheReply(t *testing.T) {
	h := newHarness(t, StreamConfig{})
	h.send(t, `{"jsonrpc":"2.0","id":1,"method":"ordered","params":{"key":"r","fail":"rpc"}}`+"\n")
	h.wantError(t, CodeInvalidParams, "1", `key "r" refused`)
	h.send(t, `{"jsonrpc":"2.0","id":2,"method":"ordered","params":{"key":"p","fail":"plain"}}`+"\n")
	h.wantError(t, CodeInternalError, "2", "plain failure")
	h.send(t, `{"jsonrpc":"2.0","id":3,"method":"ordered","params":{"key":"x","panic":true}}`+"\n")
	h.wantError(t, CodeInternalError, "3", "internal error in ordered: admit broke")
	h.send(t, `{"jsonrpc":"2.0","id":4,"method":"ordered","params":{"key":"ok"}}`+"\n")
	h.wantResult(t, "4", "admitted ok")
	if u := h.admissions.undoneKeys(); len(u) != 0 {
		t.Fatalf("undone %q, want nothing", u)
	}
}
