package http

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"io"
	"net/http"
	"strings"

	"github.com/gorilla/mux"
	"github.com/profilestore/profilestore/domain"
)

// Appservice is the application-service side the homeserver calls on
// /_matrix/app/v1 (package appservice's Ingester is one): it knows the
// homeserver's token and what a transaction means.
type Appservice interface {
	// HSToken is the token the homeserver presents on every request.
	HSToken() string
	// Transaction processes the body of one transaction. An error with an
	// errcode is the request's fault; IO.PROFILESTORE.UNAVAILABLE (or an
	// error without one) asks the homeserver to retry the transaction.
	Transaction(ctx context.Context, txnID string, body io.Reader) error
}

// appserviceRoutes serves the application-service API. Other
// /_matrix/app/v1 paths fall to the not-found handler (404 M_UNRECOGNIZED).
func (s *Server) appserviceRoutes() {
	if s.cfg.Appservice == nil {
		return
	}
	hsToken := sha256.Sum256([]byte(s.cfg.Appservice.HSToken()))
	a := prefixed{s.router, "/_matrix/app/v1"}
	a.HandleFunc("/transactions/{txnId}", s.homeserverAuthed(hsToken, s.handleTransaction)).Methods(http.MethodPut)
	a.HandleFunc("/ping", s.homeserverAuthed(hsToken, s.handlePing)).Methods(http.MethodPost)
	a.HandleFunc("/users/{userId}", s.homeserverAuthed(hsToken, s.handleQueryUserOrRoom)).Methods(http.MethodGet)
	a.HandleFunc("/rooms/{roomAlias}", s.homeserverAuthed(hsToken, s.handleQueryUserOrRoom)).Methods(http.MethodGet)
	s.profileLookupRoutes(hsToken)
}

// homeserverAuthed checks the hs_token: 401 M_MISSING_TOKEN without one,
// 403 M_FORBIDDEN for a wrong one. The legacy access_token query parameter
// is read too (homeservers before spec v1.4 and Dendrite's legacy_auth send
// it); when both are given they must agree.
func (s *Server) homeserverAuthed(hsToken [sha256.Size]byte, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var tokens []string
		if h := r.Header.Get("Authorization"); h != "" {
			scheme, tok, ok := strings.Cut(h, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") {
				s.writeError(w, r, domain.Errorf(domain.ErrCodeForbidden, "Malformed Authorization header"))
				return
			}
			tokens = append(tokens, strings.TrimSpace(tok))
		}
		if q := r.URL.Query().Get("access_token"); q != "" {
			tokens = append(tokens, q)
		}
		if len(tokens) == 0 {
			s.writeError(w, r, domain.Errorf(domain.ErrCodeMissingToken, "Missing hs_token"))
			return
		}
		for _, t := range tokens {
			sum := sha256.Sum256([]byte(t))
			if subtle.ConstantTimeCompare(sum[:], hsToken[:]) != 1 {
				s.writeError(w, r, domain.Errorf(domain.ErrCodeForbidden, "Bad hs_token"))
				return
			}
		}
		next(w, r)
	}
}

func (s *Server) handleTransaction(w http.ResponseWriter, r *http.Request) {
	// The raw path segment is the ledger's key, as it always was.
	txnID := mux.Vars(r)["txnId"]
	if txnID == "" || len(txnID) > 255 {
		s.writeError(w, r, domain.Errorf(domain.ErrCodeInvalidParam, "Bad transaction id"))
		return
	}
	err := s.cfg.Appservice.Transaction(r.Context(), txnID, r.Body)
	switch code := domain.ErrorCode(err); {
	case err == nil:
		writeEmptyObject(w)
	case code == domain.ErrCodeTooLarge:
		// 413 tells the homeserver not to send this transaction again as is.
		writeJSON(w, http.StatusRequestEntityTooLarge, matrixError{ErrCode: code, Error: domain.ErrorMessage(err)})
	case code == domain.ErrCodeUnavailable || code == "":
		// 503: the homeserver retries the same transaction later. The
		// appservice side has logged why.
		writeJSON(w, http.StatusServiceUnavailable, matrixError{ErrCode: domain.ErrCodeUnavailable, Error: "Could not process the transaction now; retry"})
	default:
		s.writeError(w, r, err)
	}
}

func (s *Server) handlePing(w http.ResponseWriter, r *http.Request) {
	// The body carries an optional transaction_id; nothing to do with it.
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
	writeEmptyObject(w)
}

// handleQueryUserOrRoom answers "no such user" (and "no such alias"):
// profilestore creates no users or rooms on the homeserver.
func (s *Server) handleQueryUserOrRoom(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, domain.Errorf(domain.ErrCodeNotFound, "profilestore provides no users or rooms"))
}
