//go:build !race

package cachestore

const raceEnabled = false
