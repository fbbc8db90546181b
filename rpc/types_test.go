package rpc

import (
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"procmgr/rpc/jsonrpc"
)

func TestSecondsAbsentIsTheDefaultAndZeroIsZero(t *testing.T) {
	for _, c := range []struct {
		in   string
		want *time.Duration // nil: absent, the manager's default
	}{
		{`{}`, nil},
		{`{"t":null}`, nil},
		{`{"t":0}`, durp(0)},
		{`{"t":0.0}`, durp(0)},
		{`{"t":1.5}`, durp(1500 * time.Millisecond)},
		{`{"t":0.001}`, durp(time.Millisecond)},
		{`{"t":86400}`, durp(24 * time.Hour)},
	} {
		var p struct {
			T *seconds `json:"t"`
		}
		if err := jsonrpc.Unmarshal([]byte(c.in), &p); err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		switch {
		case c.want == nil && p.T != nil:
			t.Errorf("%s = %v, want absent (the default)", c.in, p.T.d)
		case c.want != nil && (p.T == nil || p.T.d != *c.want):
			t.Errorf("%s = %+v, want %v", c.in, p.T, *c.want)
		}
	}
}

func TestSecondsRefusesWhatIsNoDurationInRange(t *testing.T) {
	for _, c := range []struct{ in, says string }{
		{`-1`, "out of range 0..86400"},
		{`-0.001`, "out of range"},
		{`86400.001`, "out of range"},
		{`1e999`, "not a finite number"}, // beyond float64: JSON's only "infinity"
		{`-1e999`, "not a finite number"},
		{`"5"`, "number of seconds"},
		{`true`, "number of seconds"},
		{`[1]`, "number of seconds"},
		{`{}`, "number of seconds"},
	} {
		var s seconds
		err := s.UnmarshalJSON([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: err %v, want one saying %q", c.in, err, c.says)
		}
	}
}

func TestSecondsCheckRefusesNaNInfinityNegativeAndTooLarge(t *testing.T) {
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1, -1e-9, 86400.5, 1e300} {
		if d, err := Seconds(f); err == nil || !strings.Contains(err.Error(), "out of range 0..86400") {
			t.Errorf("Seconds(%v) = %v, %v; want an out-of-range error", f, d, err)
		}
	}
	for f, want := range map[float64]time.Duration{0: 0, 0.25: 250 * time.Millisecond, 86400: MaxDuration} {
		if d, err := Seconds(f); err != nil || d != want {
			t.Errorf("Seconds(%v) = %v, %v; want %v", f, d, err, want)
		}
	}
}

func TestSignalAcceptsNamesShortNamesAndNumbers(t *testing.T) {
	for in, want := range map[string]syscall.Signal{
		`"SIGTERM"`: syscall.SIGTERM, `"TERM"`: syscall.SIGTERM, `"term"`: syscall.SIGTERM,
		`"SIGKILL"`: syscall.SIGKILL, `9`: syscall.SIGKILL, `"9"`: syscall.SIGKILL, `15.0`: syscall.SIGTERM,
		`64`: syscall.Signal(64),
	} {
		var s signal
		if err := s.UnmarshalJSON([]byte(in)); err != nil || s.sig != want {
			t.Errorf("%s = %v, %v; want %v", in, s.sig, err, want)
		}
	}
}

func TestSignalRefusesWhatNamesNoSignal(t *testing.T) {
	for _, c := range []struct{ in, says string }{
		{`"SIGNOPE"`, `unknown signal "SIGNOPE"`},
		{`""`, "unknown signal"},
		{`0`, "out of range 1..64"},
		{`-1`, "out of range 1..64"},
		{`65`, "out of range 1..64"},
		{`1.5`, "not an integer"},
		{`true`, "name like"},
		{`{}`, "name like"},
		{`[15]`, "name like"},
	} {
		var s signal
		err := s.UnmarshalJSON([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: err %v, want one saying %q", c.in, err, c.says)
		}
		if err != nil && strings.Contains(err.Error(), "invalid argument") {
			t.Errorf("%s: %q keeps the manager's prefix", c.in, err)
		}
	}
}

func TestOutputFieldNamesAreCaseSensitive(t *testing.T) {
	for _, c := range []struct{ in, names string }{
		{`{"FILE":"x.log"}`, `"FILE"`},
		{`{"File":"x.log","append":true}`, `"File"`},
		{`{"file":"x.log","Append":true}`, `"Append"`},
		{`{"Capture":{}}`, `"Capture"`},
		{`{"capture":{"SIZE":10}}`, `"capture.SIZE"`},
		{`{"capture":{"file_Backups":1}}`, `"capture.file_Backups"`},
	} {
		var o output
		err := o.UnmarshalJSON([]byte(c.in))
		if err == nil || !strings.Contains(err.Error(), c.names) || !strings.Contains(err.Error(), "case-sensitive") {
			t.Errorf("%s: err %v, want one naming %s as case-sensitive", c.in, err, c.names)
		}
	}
}

// The server decodes params in one pass: an output's UnmarshalJSON error
// must survive it, so that the -32602 names the stream and the member.
func TestOutputNameInTheWrongCaseFailsTheWholeCreate(t *testing.T) {
	var p createParams
	err := jsonrpc.Unmarshal([]byte(`{"tag":"t","argv":["x"],"stdout":{"FILE":"x.log"}}`), &p)
	if err == nil || !strings.Contains(err.Error(), `"FILE"`) {
		t.Fatalf("err %v, want one naming \"FILE\"", err)
	}
}

func durp(d time.Duration) *time.Duration { return &d }
