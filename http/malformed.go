package http

import (
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"unicode/utf8"

	"github.com/profilestore/profilestore/domain"
)

// checkQuery refuses a query string that does not parse (a bad %-escape, a
// ';' separator) or that holds bytes that are not UTF-8. net/http's
// r.URL.Query() drops such pairs silently, which turned
// ?propagate_to=%ZZ into the default propagation and ?at=%ZZ into "now".
// The message never repeats the query: it may hold an access token.
func checkQuery(r *http.Request) error {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return domain.Errorf(domain.ErrCodeInvalidParam, "The query string is malformed (a bad %%-escape or a ';' separator)")
	}
	for name, values := range q {
		if !utf8.ValidString(name) {
			return domain.Errorf(domain.ErrCodeInvalidParam, "A query parameter name is not valid UTF-8")
		}
		for _, v := range values {
			if !utf8.ValidString(v) {
				return domain.Errorf(domain.ErrCodeInvalidParam, "The query parameter %s is not valid UTF-8", name)
			}
		}
	}
	return nil
}

// net/http answers a request it cannot parse itself, before any handler
// runs: a malformed %-escape in the path, a missing Host header, headers
// over the size limit. It writes that answer, in text/plain, straight to
// the connection in one write and then closes it. matrixErrorListener's
// connections recognise that write and send a Matrix error instead, so
// every answer of the server is a Matrix error a client can read.
type matrixErrorListener struct{ net.Listener }

func (l matrixErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return matrixErrorConn{c}, nil
}

type matrixErrorConn struct{ net.Conn }

// Write replaces net/http's own error answer; every other write (all
// handler responses, which always carry a Date header) passes unchanged.
func (c matrixErrorConn) Write(b []byte) (int, error) {
	if answer, ok := matrixParseError(b); ok {
		if _, err := c.Conn.Write(answer); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// parseErrorAnswer is the exact shape of net/http's answer to a request it
// could not read (server.go, "errorHeaders"): no Date, no Content-Length.
var parseErrorAnswer = regexp.MustCompile(`\AHTTP/1\.1 ([45][0-9][0-9]) [^\r\n]*\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n[^\r\n]*\z`)

// matrixParseError returns the Matrix-error form of net/http's answer b,
// or false when b is not that answer.
func matrixParseError(b []byte) ([]byte, bool) {
	m := parseErrorAnswer.FindSubmatch(b)
	if m == nil {
		return nil, false
	}
	status, _ := strconv.Atoi(string(m[1]))
	body := matrixError{ErrCode: domain.ErrCodeUnrecognized, Error: "The request could not be read as HTTP"}
	switch status {
	case http.StatusBadRequest:
		body = matrixError{ErrCode: domain.ErrCodeInvalidParam, Error: "The request is malformed (for example a bad %-escape in the path or a missing Host header)"}
	case http.StatusRequestHeaderFieldsTooLarge:
		body = matrixError{ErrCode: domain.ErrCodeTooLarge, Error: "The request headers are too large"}
	}
	data, _ := json.Marshal(body)
	out := "HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\n" +
		"Content-Type: application/json\r\n" +
		"Access-Control-Allow-Origin: *\r\n" +
		"Content-Length: " + strconv.Itoa(len(data)) + "\r\n" +
		"Connection: close\r\n\r\n" + string(data)
	return []byte(out), true
}
