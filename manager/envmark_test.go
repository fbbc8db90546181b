package manager

import (
	"os"
	"slices"
	"testing"
	"time"
)

func TestEnvMarkNamesTheTagOnlyOfThisSessionsProcesses(t *testing.T) {
	env := func(kv ...string) []byte {
		var b []byte
		for _, s := range kv {
			b = append(append(b, s...), 0)
		}
		return b
	}
	for _, c := range []struct {
		env  []byte
		want envMark
	}{
		{env("PATH=/bin", "PROCMGR_TAG=web", "PROCMGR_SESSION=s1"), envMark{ours: true, tag: "web"}},
		{env("PROCMGR_SESSION=s1"), envMark{ours: true}},
		{env("PROCMGR_TAG=web", "PROCMGR_SESSION=s2"), envMark{}},              // an outer session's tool
		{env("PROCMGR_TAG=web", "PROCMGR_SESSION=s1x"), envMark{}},             // a prefix is not the session
		{env("XPROCMGR_SESSION=s1", "PROCMGR_TAG=web"), envMark{}},             // nor a longer name
		{env("PROCMGR_SESSION=s2", "PROCMGR_SESSION=s1"), envMark{ours: true}}, // any of several
		{nil, envMark{}},
	} {
		if got := parseEnvMark(c.env, "s1"); got != c.want {
			t.Errorf("parseEnvMark(%q) = %+v, want %+v", c.env, got, c.want)
		}
	}
}

func TestReadEnvMarkReadsThisProcessEnvironment(t *testing.T) {
	// The test binary's own environment: unmarked unless run inside a session.
	mark, known := readEnvMark(os.Getpid(), "no-such-session")
	if !known || mark.ours {
		t.Errorf("own process: mark %+v, known %v; want not ours, known", mark, known)
	}
}

func TestMarksAreStrippedFromEveryEnvironmentTheSidecarHandsOn(t *testing.T) {
	in := []string{"A=1", "PROCMGR_TAG=caller", "PROCMGR_SESSION=outer", "PROCMGR_TAGX=kept", "B=2"}
	if got, want := withoutMarks(in), []string{"A=1", "PROCMGR_TAGX=kept", "B=2"}; !slices.Equal(got, want) {
		t.Errorf("withoutMarks = %q, want %q", got, want)
	}
	got := toolEnv(in, "web", "s1")
	want := []string{"A=1", "PROCMGR_TAGX=kept", "B=2", "PROCMGR_TAG=web", "PROCMGR_SESSION=s1"}
	if !slices.Equal(got, want) {
		t.Errorf("toolEnv = %q, want %q", got, want)
	}
}

func TestAnEmptyEnvironIsReadAgainForEnvSettleThenTakenAsNotOurs(t *testing.T) {
	u := emptyEnvirons{}
	k := procKey{42, 7}
	t0 := time.Now()
	if !u.settling(k, t0) || !u.settling(k, t0.Add(envSettle-time.Millisecond)) {
		t.Error("not settling within envSettle of the first empty reading")
	}
	if u.settling(k, t0.Add(envSettle)) {
		t.Error("still settling envSettle after the first empty reading")
	}
	if !u.settling(procKey{42, 8}, t0.Add(envSettle)) {
		t.Error("a recycled pid (another start time) inherited the first reading")
	}
}
