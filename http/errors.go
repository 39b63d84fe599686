package http

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/profilestore/profilestore/domain"
	"github.com/sirupsen/logrus"
)

// statusOf maps a Matrix errcode to its HTTP status.
var statusOf = map[string]int{
	domain.ErrCodeForbidden:       http.StatusForbidden,
	domain.ErrCodeNotFound:        http.StatusNotFound,
	domain.ErrCodeInvalidParam:    http.StatusBadRequest,
	domain.ErrCodeMissingParam:    http.StatusBadRequest,
	domain.ErrCodeBadJSON:         http.StatusBadRequest,
	domain.ErrCodeNotJSON:         http.StatusBadRequest,
	domain.ErrCodeTooLarge:        http.StatusBadRequest,
	domain.ErrCodeProfileTooLarge: http.StatusBadRequest,
	domain.ErrCodeKeyTooLarge:     http.StatusBadRequest,
	domain.ErrCodeMissingToken:    http.StatusUnauthorized,
	domain.ErrCodeUnknownToken:    http.StatusUnauthorized,
	domain.ErrCodeLimitExceeded:   http.StatusTooManyRequests,
	domain.ErrCodeUnrecognized:    http.StatusNotFound,
	domain.ErrCodeExclusive:       http.StatusForbidden, // an appservice acting outside its namespaces
	domain.ErrCodeConflict:        http.StatusPreconditionFailed,
	domain.ErrCodeNotReady:        http.StatusServiceUnavailable,
	domain.ErrCodeUnavailable:     http.StatusBadGateway,
}

// bodyTooLargeError is a request body over the cap: 413 M_TOO_LARGE, as the
// spec's M_TOO_LARGE ("the request or entity was too large") asks. A value
// too long for its field is M_TOO_LARGE with 400, as Synapse answers it.
type bodyTooLargeError struct{ err *domain.Error }

func (e bodyTooLargeError) Error() string { return e.err.Error() }
func (e bodyTooLargeError) Unwrap() error { return e.err }

// matrixError is the body of every error response.
type matrixError struct {
	ErrCode      string `json:"errcode"`
	Error        string `json:"error"`
	RetryAfterMs int64  `json:"retry_after_ms,omitempty"`
}

// writeJSON sends v with the status; encoding failures are the server's bug
// and were already excluded by the types used.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// emptyObject is what json.Encoder writes for struct{}{}.
var emptyObject = []byte("{}\n")

// writeEmptyObject answers 200 with {}, the answer of most writes, without
// an encoder.
func writeEmptyObject(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(emptyObject)
}

// writeError answers with the Matrix error of err. Errors without an errcode
// are internal: logged with the request's logger and shown as M_UNKNOWN.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := domain.ErrorCode(err)
	if code == "" {
		requestLogger(r, s.log).WithError(err).Error("internal error")
		writeJSON(w, http.StatusInternalServerError, matrixError{ErrCode: domain.ErrCodeUnknown, Error: "Internal server error"})
		return
	}
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusBadRequest
	}
	if errors.As(err, new(bodyTooLargeError)) {
		status = http.StatusRequestEntityTooLarge
	}
	writeJSON(w, status, matrixError{ErrCode: code, Error: domain.ErrorMessage(err)})
}

// writeRateLimited answers 429 with Retry-After (seconds, rounded up) and
// the deprecated retry_after_ms that older clients read.
func writeRateLimited(w http.ResponseWriter, retryAfterMs int64) {
	secs := (retryAfterMs + 999) / 1000
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
	writeJSON(w, http.StatusTooManyRequests, matrixError{ErrCode: domain.ErrCodeLimitExceeded, Error: "Too many requests", RetryAfterMs: retryAfterMs})
}

func requestLogger(r *http.Request, base logrus.FieldLogger) logrus.FieldLogger {
	if info, ok := r.Context().Value(loggerKey{}).(*requestInfo); ok {
		return info.logger()
	}
	return base
}
