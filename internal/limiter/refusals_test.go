package limiter

import (
	"runtime"
	"testing"
	"time"
)

// lim is the limit the refusals of these tests were made under.
var lim = Limit{Algorithm: FixedWindow, Events: 2, Window: time.Minute}

func TestRefusalsHoldUntilTheStoreWouldAdmit(t *testing.T) {
	r := NewRefusals(64)
	now := time.UnixMicro(at(0))
	r.Record(7, now, lim, 2, Decision{Remaining: 1, Reset: 30 * time.Second, RetryAfter: 10 * time.Second}, r.Generation())

	for _, tt := range []struct {
		name    string
		after   time.Duration
		cost    int64
		refused bool
	}{
		{"same cost, at once", 0, 2, true},
		{"a larger cost", time.Second, 5, true},
		{"a smaller cost may fit: the store decides", time.Second, 1, false},
		{"just before the moment", 10*time.Second - time.Microsecond, 2, true},
		{"at the moment", 10 * time.Second, 2, false},
		{"after it, forgotten", 5 * time.Second, 2, false},
	} {
		d, refused := r.Check(7, now.Add(tt.after), lim, tt.cost)
		if refused != tt.refused {
			t.Fatalf("%s: refused=%v, want %v", tt.name, refused, tt.refused)
		}
		if refused {
			if want := 10*time.Second - tt.after; d.RetryAfter != want || d.Allowed {
				t.Errorf("%s: %+v, want a refusal with RetryAfter %v", tt.name, d, want)
			}
			if want := 30*time.Second - tt.after; d.Reset != want || d.Remaining != 1 {
				t.Errorf("%s: %+v, want Reset %v and Remaining 1", tt.name, d, want)
			}
		}
	}
	if n := r.Len(); n != 0 {
		t.Errorf("%d refusals held after the last one ended", n)
	}
}

func TestRefusalsRecordOnlyWhatEnds(t *testing.T) {
	r := NewRefusals(64)
	now := time.UnixMicro(at(0))
	r.Record(1, now, lim, 1, Decision{Allowed: true, Wait: time.Second}, r.Generation())
	r.Record(2, now, lim, 99, Decision{RetryAfter: never}, r.Generation())
	if _, refused := r.Check(1, now, lim, 1); refused {
		t.Error("an admission was remembered as a refusal")
	}
	if _, refused := r.Check(2, now, lim, 99); refused {
		t.Error("a refusal without end was remembered")
	}
	if r.Len() != 0 {
		t.Errorf("%d refusals held", r.Len())
	}
}

func TestRefusalsForgetAndClear(t *testing.T) {
	r := NewRefusals(64)
	now := time.UnixMicro(at(0))
	for key := range uint64(3) {
		r.Record(key, now, lim, 1, Decision{RetryAfter: time.Minute}, r.Generation())
	}
	r.Forget(1)
	if _, refused := r.Check(1, now, lim, 1); refused {
		t.Error("a forgotten key is still refused")
	}
	if _, refused := r.Check(2, now, lim, 1); !refused {
		t.Error("forgetting one key forgot another")
	}
	r.Clear()
	if _, refused := r.Check(2, now, lim, 1); refused || r.Len() != 0 {
		t.Error("a cleared table still refuses")
	}
}

// When the table is full, the refusal that ends first makes room, be it
// the one being recorded.
func TestRefusalsEvictTheEarliestEnd(t *testing.T) {
	r := NewRefusals(refusalShards) // one per shard
	now := time.UnixMicro(at(0))
	refused := func(key uint64) bool {
		_, ok := r.Check(key, now, lim, 1)
		return ok
	}
	// Keys 0, 16 and 32 share a shard.
	r.Record(0, now, lim, 1, Decision{RetryAfter: 3 * time.Second}, r.Generation())
	r.Record(16, now, lim, 1, Decision{RetryAfter: time.Second}, r.Generation())
	if !refused(0) || refused(16) {
		t.Errorf("a refusal ending sooner than the one held replaced it (0: %v, 16: %v)", refused(0), refused(16))
	}
	r.Record(32, now, lim, 1, Decision{RetryAfter: 5 * time.Second}, r.Generation())
	if refused(0) || !refused(32) {
		t.Errorf("a refusal ending later did not replace the one ending first (0: %v, 32: %v)", refused(0), refused(32))
	}
	for key := range uint64(10_000) {
		r.Record(key, now, lim, 1, Decision{RetryAfter: time.Duration(key+1) * time.Millisecond}, r.Generation())
	}
	if n := r.Len(); n > refusalShards {
		t.Errorf("the table holds %d refusals, bound %d", n, refusalShards)
	}
}

func TestRefusalsRecordAgainReplaces(t *testing.T) {
	r := NewRefusals(64)
	now := time.UnixMicro(at(0))
	r.Record(5, now, lim, 3, Decision{RetryAfter: time.Second}, r.Generation())
	r.Record(5, now, lim, 1, Decision{RetryAfter: 2 * time.Second}, r.Generation())
	d, refused := r.Check(5, now.Add(1500*time.Millisecond), lim, 1)
	if !refused || d.RetryAfter != 500*time.Millisecond {
		t.Errorf("after a second refusal of the key: %+v, %v", d, refused)
	}
	if r.Len() != 1 {
		t.Errorf("%d refusals held for one key", r.Len())
	}
}

// A refusal made under one limit says nothing under another: after a
// reload that changed the limit, the store decides.
func TestRefusalsHoldOnlyUnderTheirLimit(t *testing.T) {
	r := NewRefusals(64)
	now := time.UnixMicro(at(0))
	r.Record(1, now, lim, 1, Decision{RetryAfter: time.Minute}, r.Generation())
	raised := lim
	raised.Events = 1000
	if _, refused := r.Check(1, now, raised, 1); refused {
		t.Error("a refusal made under events 2 held under events 1000")
	}
	if _, refused := r.Check(1, now, lim, 1); !refused {
		t.Error("the refusal no longer holds under its own limit")
	}
}

// A refusal the store made before a reset, whose answer arrives after the
// reset was carried out here, is not remembered.
func TestRefusalsIgnoreAnswersFromBeforeAReset(t *testing.T) {
	r := NewRefusals(64)
	now := time.UnixMicro(at(0))
	for _, reset := range []func(){func() { r.Forget(1) }, r.Clear} {
		gen := r.Generation() // read before asking the store
		reset()               // the operator's reset arrives meanwhile
		r.Record(1, now, lim, 1, Decision{RetryAfter: time.Minute}, gen)
		if _, refused := r.Check(1, now, lim, 1); refused {
			t.Error("a refusal made before a reset was remembered after it")
		}
	}
}

// A full table of 65,536 refusals holds what the README says: at most
// RefusalBytes each.
func TestRefusalBytes(t *testing.T) {
	const n = 1 << 16
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := NewRefusals(n)
	now := time.UnixMicro(at(0))
	for k := range uint64(n) {
		r.Record(k*0x9E3779B97F4A7C15+1, now, lim, 1, Decision{RetryAfter: time.Duration(k+1) * time.Millisecond}, r.Generation())
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if r.Len() < n*9/10 {
		t.Fatalf("the table holds %d refusals, want about %d", r.Len(), n)
	}
	each := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / int64(r.Len())
	runtime.KeepAlive(r)
	t.Logf("%d bytes per refusal", each)
	if each > RefusalBytes {
		t.Errorf("%d bytes per refusal, want at most %d", each, RefusalBytes)
	}
}
