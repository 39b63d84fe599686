package http

import (
	"context"
	"errors"
	"net/http"

	"github.com/profilestore/profilestore/domain"
	"github.com/profilestore/profilestore/eventstore"
	"github.com/profilestore/profilestore/eventstore/integrity"
)

// integrityState is GET /_profilestore/v1/integrity: what a witness needs
// (the public key, the latest seal) and the online check's outcome.
type integrityState struct {
	PublicKey   string                `json:"public_key,omitempty"`
	KeyID       string                `json:"key_id,omitempty"`
	TrustedKeys []string              `json:"trusted_keys"`
	LatestSeal  *integrity.SealRef    `json:"latest_seal"`
	Check       integrity.CheckStatus `json:"check"`
}

func (s *Server) handleIntegrity(w http.ResponseWriter, r *http.Request) {
	if _, err := s.feedAuth(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	st := integrityState{TrustedKeys: []string{}, Check: s.cfg.Integrity.Status()}
	keys := s.cfg.Integrity.Keys()
	for _, k := range keys {
		st.TrustedKeys = append(st.TrustedKeys, integrity.EncodePublicKey(k))
	}
	if s.cfg.SealKey != nil {
		st.PublicKey, st.KeyID = integrity.EncodePublicKey(s.cfg.SealKey), integrity.KeyID(s.cfg.SealKey)
	}
	seal, rec, found, err := integrity.LatestSeal(r.Context(), s.cfg.Store)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if found {
		link, _ := integrity.ReadLink(rec.Metadata)
		st.LatestSeal = &integrity.SealRef{Seal: seal, Position: rec.Position.String(), EventHash: link.Hash}
	}
	writeJSON(w, http.StatusOK, st)
}

// handleIntegrityCheck starts the online check (admins only): 202 when it
// started, 200 when one is running already; GET /integrity shows the outcome.
func (s *Server) handleIntegrityCheck(w http.ResponseWriter, r *http.Request) {
	if id, _ := identity(r); !id.Admin {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeForbidden, "Only admins may start an integrity check"))
		return
	}
	// The check outlives the request: it ends with the server.
	if s.cfg.Integrity.Start(context.WithoutCancel(r.Context())) {
		writeJSON(w, http.StatusAccepted, map[string]any{"started": true})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"started": false, "running": true})
}

// handleIntegrityProof is GET /integrity/proof?position=P: the proof that
// the event at P was recorded before a signed seal (integrity.Proof).
func (s *Server) handleIntegrityProof(w http.ResponseWriter, r *http.Request) {
	if _, err := s.feedAuth(r); err != nil {
		s.writeError(w, r, err)
		return
	}
	tok := r.URL.Query().Get("position")
	if tok == "" {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeMissingParam, "position is required"))
		return
	}
	p, err := eventstore.ParsePosition(tok)
	if err != nil {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeInvalidParam, "position is not a position token"))
		return
	}
	proof, err := integrity.Prove(r.Context(), s.cfg.Store, p)
	switch {
	case errors.Is(err, integrity.ErrNoEvent):
		s.writeError(w, r, domain.Errorf(domain.ErrCodeNotFound, "No event at position %s", p))
	case errors.Is(err, integrity.ErrNotChained):
		s.writeError(w, r, domain.Errorf(domain.ErrCodeNotFound, "The event at %s is not part of the history (it is bookkeeping), so no proof covers it", p))
	case errors.Is(err, integrity.ErrNotSealed):
		s.writeError(w, r, domain.Errorf(domain.ErrCodeNotReady, "No seal covers the event at %s yet; the next seal is written within the configured seal interval", p))
	case err != nil:
		s.writeError(w, r, err)
	default:
		writeJSON(w, http.StatusOK, proof)
	}
}
