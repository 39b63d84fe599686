//go:build !(cgo && linux)

package viewstore

// trimCMemory does nothing: without cgo, pebble's block cache is Go
// memory, which the Go runtime returns to the system itself.
func trimCMemory() bool { return false }
