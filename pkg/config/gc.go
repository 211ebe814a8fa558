package config

import "runtime/debug"

// TuneGC sets the garbage collector's percent and soft memory limit (in
// bytes) unless GOGC or GOMEMLIMIT set them. A service whose live heap is
// a few MiB collects every few hundred requests at Go's default GOGC=100;
// a higher percent trades a little resident memory for that CPU, and the
// limit bounds the heap should the live heap grow.
func TuneGC(getenv func(string) string, percent int, limit int64) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(percent)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(limit)
	}
}
