// Package domain holds profilestore's Matrix identifiers, profile and room
// events, the pure decisions that turn commands into events, and the command
// services that load, decide and append. It depends on no adapter: only on
// the eventstore port.
package domain

import (
	"errors"
	"fmt"
)

// Matrix error codes used by profilestore.
const (
	ErrCodeForbidden       = "M_FORBIDDEN"
	ErrCodeNotFound        = "M_NOT_FOUND"
	ErrCodeInvalidParam    = "M_INVALID_PARAM"
	ErrCodeMissingParam    = "M_MISSING_PARAM"
	ErrCodeBadJSON         = "M_BAD_JSON"
	ErrCodeNotJSON         = "M_NOT_JSON"
	ErrCodeTooLarge        = "M_TOO_LARGE"
	ErrCodeProfileTooLarge = "M_PROFILE_TOO_LARGE"
	ErrCodeKeyTooLarge     = "M_KEY_TOO_LARGE"
	ErrCodeMissingToken    = "M_MISSING_TOKEN"
	ErrCodeUnknownToken    = "M_UNKNOWN_TOKEN"
	ErrCodeLimitExceeded   = "M_LIMIT_EXCEEDED"
	ErrCodeUnrecognized    = "M_UNRECOGNIZED"
	ErrCodeExclusive       = "M_EXCLUSIVE"
	ErrCodeUnknown         = "M_UNKNOWN"
	// ErrCodeConflict is the precondition failure of If-Match (HTTP 412).
	ErrCodeConflict = "IO.PROFILESTORE.PRECONDITION_FAILED"
	// ErrCodeNotReady says the projections have not reached a requested
	// position in time (HTTP 503).
	ErrCodeNotReady = "IO.PROFILESTORE.NOT_READY"
	// ErrCodeUnavailable says a service profilestore depends on (a
	// homeserver, the store) did not answer (HTTP 502/503).
	ErrCodeUnavailable = "IO.PROFILESTORE.UNAVAILABLE"
)

// Error is a failure a caller can act on: a Matrix errcode and a message safe
// to show. Any other error is internal and is logged, never shown.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the Matrix errcode of err, or "" for an internal error.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// ErrorMessage returns the caller-safe message of err.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "Internal error"
}
