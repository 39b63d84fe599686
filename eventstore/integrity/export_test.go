package integrity

// SetWindowKeep sets how many of the newest window events compactWindow
// keeps as they are, and returns what restores it.
func SetWindowKeep(n int) (restore func()) {
	old := windowKeep
	windowKeep = n
	return func() { windowKeep = old }
}

// WindowLen is how many events the verifier's window holds.
func (v *Verifier) WindowLen() int { return v.window.len() }
