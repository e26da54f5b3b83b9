//go:build !race

package sim

// raceEnabled reports whether the race detector is on: it slows the
// simulation about twentyfold, so the biggest scenarios shrink under it.
const raceEnabled = false
