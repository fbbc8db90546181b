package rpc

import (
	"errors"
	"slices"
	"testing"

	"procmgr/manager"
	"procmgr/rpc/jsonrpc"
)

func strp(s string) *string { return &s }

func TestBuildEnvMergesOverridesInOrderAndNullRemoves(t *testing.T) {
	base := func() []string { return []string{"A=1", "B=2", "A=3", "C="} }
	env, err := buildEnv(true, base, map[string]*string{"B": nil, "D": strp("4"), "C": strp("x=y")})
	if err != nil {
		t.Fatal(err)
	}
	// The later A wins but keeps A's place; B is removed; C overridden in
	// place; D appended.
	if want := []string{"A=3", "C=x=y", "D=4"}; !slices.Equal(env, want) {
		t.Fatalf("env = %q, want %q", env, want)
	}
	env, err = buildEnv(false, base, map[string]*string{"Z": strp(""), "A": nil})
	if err != nil || !slices.Equal(env, []string{"Z="}) {
		t.Fatalf("without inheritance: %q, %v; want only Z=", env, err)
	}
}

func TestBuildEnvRefusesBadNames(t *testing.T) {
	for _, name := range []string{"", "A=B", "A\x00"} {
		_, err := buildEnv(false, nil, map[string]*string{name: strp("v")})
		var re *jsonrpc.Error
		if !errors.As(err, &re) || re.Code != jsonrpc.CodeInvalidParams {
			t.Errorf("name %q: err %v, want invalid params", name, err)
		}
	}
}

func TestCompleteUTF8HoldsBackOnlyAnIncompleteLastCharacter(t *testing.T) {
	euro := []byte("€") // 3 bytes
	clef := []byte("𝄞") // 4 bytes
	for _, c := range []struct {
		in   []byte
		want int
	}{
		{nil, 0},
		{[]byte("abc"), 3},
		{append([]byte("a"), euro...), 4},
		{append([]byte("a"), euro[:1]...), 1},
		{append([]byte("a"), euro[:2]...), 1},
		{append([]byte("a"), clef[:3]...), 1},
		{clef, 4},
		{[]byte{0xff}, 1},                     // invalid, not incomplete: passed on (becomes U+FFFD)
		{[]byte{0x80, 0x80, 0x80, 0x80}, 4},   // stray continuation bytes, same
		{append([]byte("ab"), 0xe2, 0x28), 4}, // a bad sequence is not held back
	} {
		if got := completeUTF8(c.in); got != c.want {
			t.Errorf("completeUTF8(% x) = %d, want %d", c.in, got, c.want)
		}
	}
}

func TestOutputDecodesEveryFormAndRefusesTheRest(t *testing.T) {
	good := map[string]manager.Output{
		`"discard"`:                        {Kind: manager.Discard},
		`"inherit"`:                        {Kind: manager.Inherit},
		`"stdout"`:                         {Kind: manager.ToStdout},
		`"capture"`:                        {Kind: manager.Captured, Capture: manager.Capture{FileBackups: manager.DefaultFileBackups}},
		` {"file":"x.log","append":true} `: {Kind: manager.File, Path: "x.log", Append: true},
		`{"capture":{"size":10,"file":"c","file_max_bytes":5}}`: {Kind: manager.Captured,
			Capture: manager.Capture{Size: 10, File: "c", FileMaxBytes: 5, FileBackups: manager.DefaultFileBackups}},
		`{"capture":{"file_backups":0}}`: {Kind: manager.Captured, Capture: manager.Capture{FileBackups: 0}},
	}
	for in, want := range good {
		var o output
		if err := o.UnmarshalJSON([]byte(in)); err != nil || o.o != want {
			t.Errorf("%s: %+v, %v; want %+v", in, o.o, err, want)
		}
	}
	for _, in := range []string{
		`"bogus"`, `5`, `null`, `[]`, `{}`, `{"append":true}`, `{"file":""}`, `{"file":5}`,
		`{"file":"x","zork":1}`, `{"file":"x","capture":{}}`, `{"capture":{"size":-1}}`,
		`{"capture":{"size":268435457}}`, `{"capture":{"file_max_bytes":-1}}`, `{"capture":{"file_backups":-1}}`,
		`{"capture":{},"append":true}`, `{`,
	} {
		var o output
		if err := o.UnmarshalJSON([]byte(in)); err == nil {
			t.Errorf("%s accepted as %+v", in, o.o)
		}
	}
}
