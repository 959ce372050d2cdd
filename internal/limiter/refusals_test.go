package limiter

import (
	"testing"
	"time"
)

func TestRefusalsHoldUntilTheStoreWouldAdmit(t *testing.T) {
	r := NewRefusals(64)
	now := time.UnixMicro(at(0))
	r.Record(7, now, 2, Decision{Remaining: 1, Reset: 30 * time.Second, RetryAfter: 10 * time.Second})

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
		d, refused := r.Check(7, now.Add(tt.after), tt.cost)
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
	r.Record(1, now, 1, Decision{Allowed: true, Wait: time.Second})
	r.Record(2, now, 99, Decision{RetryAfter: never})
	if _, refused := r.Check(1, now, 1); refused {
		t.Error("an admission was remembered as a refusal")
	}
	if _, refused := r.Check(2, now, 99); refused {
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
		r.Record(key, now, 1, Decision{RetryAfter: time.Minute})
	}
	r.Forget(1)
	if _, refused := r.Check(1, now, 1); refused {
		t.Error("a forgotten key is still refused")
	}
	if _, refused := r.Check(2, now, 1); !refused {
		t.Error("forgetting one key forgot another")
	}
	r.Clear()
	if _, refused := r.Check(2, now, 1); refused || r.Len() != 0 {
		t.Error("a cleared table still refuses")
	}
}

// When the table is full, the refusal that ends first makes room, be it
// the one being recorded.
func TestRefusalsEvictTheEarliestEnd(t *testing.T) {
	r := NewRefusals(refusalShards) // one per shard
	now := time.UnixMicro(at(0))
	refused := func(key uint64) bool {
		_, ok := r.Check(key, now, 1)
		return ok
	}
	// Keys 0, 16 and 32 share a shard.
	r.Record(0, now, 1, Decision{RetryAfter: 3 * time.Second})
	r.Record(16, now, 1, Decision{RetryAfter: time.Second})
	if !refused(0) || refused(16) {
		t.Errorf("a refusal ending sooner than the one held replaced it (0: %v, 16: %v)", refused(0), refused(16))
	}
	r.Record(32, now, 1, Decision{RetryAfter: 5 * time.Second})
	if refused(0) || !refused(32) {
		t.Errorf("a refusal ending later did not replace the one ending first (0: %v, 32: %v)", refused(0), refused(32))
	}
	for key := range uint64(10_000) {
		r.Record(key, now, 1, Decision{RetryAfter: time.Duration(key+1) * time.Millisecond})
	}
	if n := r.Len(); n > refusalShards {
		t.Errorf("the table holds %d refusals, bound %d", n, refusalShards)
	}
}

func TestRefusalsRecordAgainReplaces(t *testing.T) {
	r := NewRefusals(64)
	now := time.UnixMicro(at(0))
	r.Record(5, now, 3, Decision{RetryAfter: time.Second})
	r.Record(5, now, 1, Decision{RetryAfter: 2 * time.Second})
	d, refused := r.Check(5, now.Add(1500*time.Millisecond), 1)
	if !refused || d.RetryAfter != 500*time.Millisecond {
		t.Errorf("after a second refusal of the key: %+v, %v", d, refused)
	}
	if r.Len() != 1 {
		t.Errorf("%d refusals held for one key", r.Len())
	}
}
