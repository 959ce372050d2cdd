package gateway

import (
	"strings"
	"sync"
)

// index finds entries by path and by tag, which the store cannot do: it
// only looks up by key. It holds an entry from just before the entry is
// written until the store lets go of it (eviction, rejection, expiry,
// replacement, deletion), so it stays as bounded as the store itself; its
// memory is part of each entry's cost.
type index struct {
	mu     sync.Mutex
	byPath map[string]*entry // the head of each path's list
	byTag  map[string]map[*entry]struct{}
	count  int
}

// purgeTarget selects entries: by URL (a path, on one host or on any),
// by path prefix, or by tag.
type purgeTarget struct {
	urls     []purgeURL
	prefixes []string
	tags     []string
}

// purgeURL is a resource to purge; an empty Host matches any host.
type purgeURL struct {
	Host string `json:"host,omitempty"`
	Path string `json:"path"`
}

func (t purgeTarget) empty() bool {
	return len(t.urls) == 0 && len(t.prefixes) == 0 && len(t.tags) == 0
}

func (ix *index) init() {
	ix.byPath = make(map[string]*entry)
	ix.byTag = make(map[string]map[*entry]struct{})
}

func (ix *index) add(e *entry) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if e.indexed {
		return
	}
	e.indexed = true
	ix.count++
	if head := ix.byPath[e.path]; head != nil {
		head.prevPath = e
		e.nextPath = head
	}
	ix.byPath[e.path] = e
	for _, t := range e.tags {
		addTo(ix.byTag, t, e)
	}
}

func (ix *index) remove(e *entry) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if !e.indexed {
		return
	}
	e.indexed = false
	ix.count--
	switch {
	case e.prevPath != nil:
		e.prevPath.nextPath = e.nextPath
	case e.nextPath != nil:
		ix.byPath[e.path] = e.nextPath
	default:
		delete(ix.byPath, e.path)
	}
	if e.nextPath != nil {
		e.nextPath.prevPath = e.prevPath
	}
	e.prevPath, e.nextPath = nil, nil
	for _, t := range e.tags {
		removeFrom(ix.byTag, t, e)
	}
}

func (ix *index) clear() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, head := range ix.byPath {
		for e := head; e != nil; {
			next := e.nextPath
			e.indexed, e.prevPath, e.nextPath = false, nil, nil
			e = next
		}
	}
	ix.init()
	ix.count = 0
}

// entries returns how many entries the index holds, response entries and
// Vary markers alike.
func (ix *index) entries() int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.count
}

// match returns the entries that t selects.
func (ix *index) match(t purgeTarget) []*entry {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	seen := make(map[*entry]struct{})
	for _, u := range t.urls {
		for e := ix.byPath[u.Path]; e != nil; e = e.nextPath {
			if u.Host == "" || u.Host == e.host {
				seen[e] = struct{}{}
			}
		}
	}
	if len(t.prefixes) > 0 {
		for path, head := range ix.byPath {
			if !hasAnyPrefix(path, t.prefixes) {
				continue
			}
			for e := head; e != nil; e = e.nextPath {
				seen[e] = struct{}{}
			}
		}
	}
	for _, tag := range t.tags {
		for e := range ix.byTag[tag] {
			seen[e] = struct{}{}
		}
	}
	out := make([]*entry, 0, len(seen))
	for e := range seen {
		out = append(out, e)
	}
	return out
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func addTo(m map[string]map[*entry]struct{}, k string, e *entry) {
	set := m[k]
	if set == nil {
		set = make(map[*entry]struct{}, 1)
		m[k] = set
	}
	set[e] = struct{}{}
}

func removeFrom(m map[string]map[*entry]struct{}, k string, e *entry) {
	set := m[k]
	delete(set, e)
	if len(set) == 0 {
		delete(m, k)
	}
}
