package bolt

// OpenReadTxs is how many read transactions of the store's file are open.
func (s *Store) OpenReadTxs() int { return s.db.Stats().OpenTxN }
