package cachestore

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
	byPath map[string]*Entry // the head of each path's list
	byTag  map[string]map[*Entry]struct{}
	count  int
}

// Target selects entries to purge: by URL (a path, on one host or on
// any), by path prefix, or by tag.
type Target struct {
	URLs     []URL    `json:"urls,omitempty"`
	Prefixes []string `json:"prefixes,omitempty"`
	Tags     []string `json:"tags,omitempty"`
}

// URL is a resource to purge, every variant and query string of it: an
// escaped path, on the canonical Host or, when Host is empty, on any.
type URL struct {
	Host string `json:"host,omitempty"`
	Path string `json:"path"`
}

// Empty reports whether t selects nothing.
func (t Target) Empty() bool {
	return len(t.URLs) == 0 && len(t.Prefixes) == 0 && len(t.Tags) == 0
}

func (ix *index) init() {
	ix.byPath = make(map[string]*Entry)
	ix.byTag = make(map[string]map[*Entry]struct{})
}

func (ix *index) add(e *Entry) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if e.indexed {
		return
	}
	e.indexed = true
	ix.count++
	if head := ix.byPath[e.Path]; head != nil {
		head.prevPath = e
		e.nextPath = head
	}
	ix.byPath[e.Path] = e
	for _, t := range e.Tags {
		addTo(ix.byTag, t, e)
	}
}

func (ix *index) remove(e *Entry) {
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
		ix.byPath[e.Path] = e.nextPath
	default:
		delete(ix.byPath, e.Path)
	}
	if e.nextPath != nil {
		e.nextPath.prevPath = e.prevPath
	}
	e.prevPath, e.nextPath = nil, nil
	for _, t := range e.Tags {
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
func (ix *index) match(t Target) []*Entry {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	seen := make(map[*Entry]struct{})
	for _, u := range t.URLs {
		for e := ix.byPath[u.Path]; e != nil; e = e.nextPath {
			if u.Host == "" || u.Host == e.Host {
				seen[e] = struct{}{}
			}
		}
	}
	if len(t.Prefixes) > 0 {
		for path, head := range ix.byPath {
			if !hasAnyPrefix(path, t.Prefixes) {
				continue
			}
			for e := head; e != nil; e = e.nextPath {
				seen[e] = struct{}{}
			}
		}
	}
	for _, tag := range t.Tags {
		for e := range ix.byTag[tag] {
			seen[e] = struct{}{}
		}
	}
	out := make([]*Entry, 0, len(seen))
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

func addTo(m map[string]map[*Entry]struct{}, k string, e *Entry) {
	set := m[k]
	if set == nil {
		set = make(map[*Entry]struct{}, 1)
		m[k] = set
	}
	set[e] = struct{}{}
}

func removeFrom(m map[string]map[*Entry]struct{}, k string, e *Entry) {
	set := m[k]
	delete(set, e)
	if len(set) == 0 {
		delete(m, k)
	}
}
