package domain

// CachedCiphers is the number of per-user ciphers the Sealer holds.
func (s *Sealer) CachedCiphers() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.aeads)
}
