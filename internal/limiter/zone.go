package limiter

import (
	"cmp"
	"slices"
	"sync/atomic"
	"time"
)

// Zone is a named limit with the state of its keys. Its limit can change
// while it runs: a change of algorithm or window starts from fresh state,
// a change of events or burst keeps the state.
type Zone struct {
	Name  string
	id    uint64
	state atomic.Pointer[zoneState]
}

type zoneState struct {
	limit   Limit
	cells   *Table[Cell]
	windows *Table[Window]
}

var zoneIDs atomic.Uint64

// NewZone returns a zone holding at most about maxKeys keys.
func NewZone(name string, l Limit, maxKeys int) *Zone {
	z := &Zone{Name: name, id: zoneIDs.Add(1)}
	z.state.Store(newZoneState(l, maxKeys))
	return z
}

func newZoneState(l Limit, maxKeys int) *zoneState {
	s := &zoneState{limit: l}
	if l.Algorithm == SlidingWindow {
		s.windows = NewTable(maxKeys, l.RestAtWindow)
	} else {
		s.cells = NewTable(maxKeys, l.RestAtCell)
	}
	return s
}

// Limit returns the zone's limit.
func (z *Zone) Limit() Limit { return z.state.Load().limit }

// Reconfigure applies a new limit and key bound. The keys' state is kept
// when the algorithm and window stay.
func (z *Zone) Reconfigure(l Limit, maxKeys int) {
	old := z.state.Load()
	if old.limit.Algorithm == l.Algorithm && old.limit.Window == l.Window {
		s := *old
		s.limit = l
		if s.cells != nil {
			s.cells.SetMaxKeys(maxKeys)
			s.cells.SetRestAt(l.RestAtCell)
		} else {
			s.windows.SetMaxKeys(maxKeys)
			s.windows.SetRestAt(l.RestAtWindow)
		}
		z.state.Store(&s)
		return
	}
	z.state.Store(newZoneState(l, maxKeys))
}

// Restorer returns what puts the zone back as it is now, after
// Reconfigure: its limit, its key bound and, unless a reconfiguration
// dropped them since, its keys' state.
func (z *Zone) Restorer() func() {
	old := z.state.Load()
	var maxKeys int64
	if old.cells != nil {
		maxKeys = old.cells.maxKeys.Load()
	} else {
		maxKeys = old.windows.maxKeys.Load()
	}
	return func() {
		if old.cells != nil {
			old.cells.SetMaxKeys(int(maxKeys))
			old.cells.SetRestAt(old.limit.RestAtCell)
		} else {
			old.windows.SetMaxKeys(int(maxKeys))
			old.windows.SetRestAt(old.limit.RestAtWindow)
		}
		z.state.Store(old)
	}
}

// Keys returns how many keys the zone holds.
func (z *Zone) Keys() int {
	s := z.state.Load()
	if s.cells != nil {
		return s.cells.Len()
	}
	return s.windows.Len()
}

// Evictions returns how many keys were evicted for room.
func (z *Zone) Evictions() uint64 {
	s := z.state.Load()
	if s.cells != nil {
		return s.cells.Evictions()
	}
	return s.windows.Evictions()
}

// Sweep drops the keys back at rest at now.
func (z *Zone) Sweep(now time.Time) int {
	s := z.state.Load()
	if s.cells != nil {
		return s.cells.Sweep(now.UnixMicro())
	}
	return s.windows.Sweep(now.UnixMicro())
}

// Reset drops one key's state.
func (z *Zone) Reset(key uint64) bool {
	s := z.state.Load()
	if s.cells != nil {
		return s.cells.Delete(key)
	}
	return s.windows.Delete(key)
}

// Clear drops every key's state and returns how many there were.
func (z *Zone) Clear() int {
	s := z.state.Load()
	if s.cells != nil {
		return s.cells.Clear()
	}
	return s.windows.Clear()
}

// Request is one zone's part of a decision: the key (hashed) and the
// units the request costs. A dry-run request is decided and counted but
// never refuses.
type Request struct {
	Zone   *Zone
	Key    uint64
	Cost   int64
	DryRun bool
}

// lockRef names one locked shard of one zone's table.
type lockRef struct {
	zone  uint64
	shard int
	state *zoneState
}

// Decide decides every request at now, atomically: the request is admitted
// only if every zone that is not in dry run admits it, and then every
// zone that admits it is charged; otherwise no zone is. out receives each
// zone's decision and must be as long as reqs.
func Decide(now time.Time, reqs []Request, out []Decision) bool {
	var buf [4]lockRef
	locks := buf[:0]
	states := make([]*zoneState, 0, 4)
	for i, r := range reqs {
		// One state per zone, even when the zone comes twice and is
		// reconfigured meanwhile: its locks must be one table's.
		s := r.Zone.state.Load()
		for j := range i {
			if reqs[j].Zone == r.Zone {
				s = states[j]
				break
			}
		}
		states = append(states, s)
		locks = append(locks, lockRef{r.Zone.id, int(r.Key % shardCount), s})
	}
	// Runs last, once every lock is released: a Put that found no room
	// without waiting took a place beyond the bound, given back here.
	defer func() {
		for _, s := range states {
			s.trim()
		}
	}()
	slices.SortFunc(locks, func(a, b lockRef) int {
		return cmp.Or(cmp.Compare(a.zone, b.zone), cmp.Compare(a.shard, b.shard))
	})
	locks = slices.CompactFunc(locks, func(a, b lockRef) bool { return a.zone == b.zone && a.shard == b.shard })
	for _, l := range locks {
		l.state.lock(l.shard)
	}
	defer func() {
		for _, l := range locks {
			l.state.unlock(l.shard)
		}
	}()

	us := now.UnixMicro()
	admitted := true
	var cellsNext [4]Cell
	var windowsNext [4]Window
	cells, windows := cellsNext[:0], windowsNext[:0]
	for i, r := range reqs {
		s := states[i]
		var d Decision
		if s.cells != nil {
			var next Cell
			next, d = s.limit.DecideCell(s.cells.Get(r.Key), us, r.Cost)
			cells = append(cells, next)
			windows = append(windows, Window{})
		} else {
			var next Window
			next, d = s.limit.DecideWindow(s.windows.Get(r.Key), us, r.Cost)
			windows = append(windows, next)
			cells = append(cells, Cell{})
		}
		out[i] = d
		if !d.Allowed && !r.DryRun {
			admitted = false
		}
	}
	if !admitted {
		// Nothing is charged: a zone that would have admitted the request
		// keeps what it had.
		for i, r := range reqs {
			if out[i].Allowed {
				out[i].Remaining += r.Cost
			}
		}
		return false
	}
	for i, r := range reqs {
		if !out[i].Allowed {
			continue
		}
		if s := states[i]; s.cells != nil {
			s.cells.Put(r.Key, cells[i], us)
		} else {
			s.windows.Put(r.Key, windows[i], us)
		}
	}
	return true
}

// trim gives back the places a decision took beyond the bound.
func (s *zoneState) trim() {
	if s.cells != nil {
		if s.cells.over() {
			s.cells.Trim()
		}
	} else if s.windows.over() {
		s.windows.Trim()
	}
}

func (s *zoneState) lock(shard int) {
	if s.cells != nil {
		s.cells.Lock(shard)
	} else {
		s.windows.Lock(shard)
	}
}

func (s *zoneState) unlock(shard int) {
	if s.cells != nil {
		s.cells.Unlock(shard)
	} else {
		s.windows.Unlock(shard)
	}
}
