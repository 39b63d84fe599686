package http

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
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
		// No route takes a parameter twice; two values could be read
		// differently by a proxy and by us.
		if len(values) > 1 {
			return domain.Errorf(domain.ErrCodeInvalidParam, "The query parameter %s is given more than once", name)
		}
		for _, v := range values {
			if !utf8.ValidString(v) {
				return domain.Errorf(domain.ErrCodeInvalidParam, "The query parameter %s is not valid UTF-8", name)
			}
		}
	}
	return nil
}

// isConsolePath reports whether path is one of the console's pages, which
// answer people with HTML rather than clients with JSON.
func isConsolePath(path string) bool {
	return path == "/console" || strings.HasPrefix(path, "/console/")
}

// maxIdempotencyKeyBytes bounds the Idempotency-Key header.
const maxIdempotencyKeyBytes = 255

// checkHeaders refuses request headers the handlers would otherwise have
// to drop silently: an Idempotency-Key over the limit would make a retry
// write twice.
func checkHeaders(r *http.Request) error {
	if len(r.Header.Get("Idempotency-Key")) > maxIdempotencyKeyBytes {
		return domain.Errorf(domain.ErrCodeInvalidParam, "Idempotency-Key is longer than %d bytes", maxIdempotencyKeyBytes)
	}
	return nil
}

// checkBody refuses a JSON body that Go's decoder would silently change:
// bytes that are not UTF-8 (RFC 8259 requires it) and \u escapes of lone
// surrogates both decode to U+FFFD. body is valid JSON.
func checkBody(body []byte) error {
	if !utf8.Valid(body) {
		return domain.Errorf(domain.ErrCodeNotJSON, "The body is not valid UTF-8")
	}
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		// In valid JSON a backslash is inside a string and starts an escape.
		if i+5 >= len(body) || body[i+1] != 'u' {
			i++ // a two-character escape such as \\ or \"
			continue
		}
		r, ok := hex4(body[i+2 : i+6])
		switch {
		case ok && r >= 0xD800 && r <= 0xDBFF:
			// A high surrogate must be followed by a low one.
			if i+11 < len(body) && body[i+6] == '\\' && body[i+7] == 'u' {
				if lo, ok := hex4(body[i+8 : i+12]); ok && lo >= 0xDC00 && lo <= 0xDFFF {
					i += 11
					continue
				}
			}
			return domain.Errorf(domain.ErrCodeBadJSON, "The body holds a lone surrogate escape (\\u%04X): strings must be valid Unicode", r)
		case ok && r >= 0xDC00 && r <= 0xDFFF:
			return domain.Errorf(domain.ErrCodeBadJSON, "The body holds a lone surrogate escape (\\u%04X): strings must be valid Unicode", r)
		}
		i += 5
	}
	return checkDuplicateKeys(body)
}

// checkDuplicateKeys refuses an object that names a key twice, at any
// depth: Go keeps the last value, other parsers the first, so the two
// readings of one body could differ (canonical JSON forbids it too). body
// is valid JSON; it is scanned once, without a decoder: most bodies are
// one small object.
func checkDuplicateKeys(body []byte) error {
	var backing [8]jsonFrame
	open := backing[:0]
	// value marks the end of a value in the innermost frame: in an object,
	// a key comes next.
	value := func() {
		if n := len(open); n > 0 && open[n-1].object {
			open[n-1].wantKey = true
		}
	}
	for i := 0; i < len(body); {
		switch c := body[i]; c {
		case '{', '[':
			value()
			open = append(open, jsonFrame{object: c == '{', wantKey: c == '{'})
			i++
		case '}', ']':
			open = open[:len(open)-1]
			i++
		case '"':
			end, escaped := stringEnd(body, i)
			if n := len(open); n > 0 && open[n-1].object && open[n-1].wantKey {
				top := &open[n-1]
				key := body[i+1 : end-1]
				if escaped {
					var k string
					if json.Unmarshal(body[i:end], &k) != nil {
						return domain.Errorf(domain.ErrCodeNotJSON, "Content not JSON")
					}
					key = []byte(k)
				}
				if top.has(key) {
					return domain.Errorf(domain.ErrCodeBadJSON, "The body names the key %q twice in one object", key)
				}
				top.wantKey = false
			} else {
				value()
			}
			i = end
		case ' ', '\t', '\r', '\n', ':', ',':
			i++
		default: // a number, true, false or null
			for i < len(body) && !endsLiteral(body[i]) {
				i++
			}
			value()
		}
	}
	return nil
}

// jsonFrame is an open object or array of checkDuplicateKeys: an object's
// keys so far, and whether its next string is a key.
type jsonFrame struct {
	keys    [][]byte
	many    map[string]bool // the keys, once there are many
	object  bool
	wantKey bool
}

// has reports whether the object already named key, and notes it.
func (f *jsonFrame) has(key []byte) bool {
	if f.many != nil {
		if f.many[string(key)] {
			return true
		}
		f.many[string(key)] = true
		return false
	}
	for _, k := range f.keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	f.keys = append(f.keys, key)
	if len(f.keys) > 16 {
		f.many = make(map[string]bool, 2*len(f.keys))
		for _, k := range f.keys {
			f.many[string(k)] = true
		}
		f.keys = nil
	}
	return false
}

// endsLiteral reports whether c ends a number or a true, false or null.
func endsLiteral(c byte) bool {
	switch c {
	case ' ', '\t', '\r', '\n', ',', ':', ']', '}':
		return true
	}
	return false
}

// stringEnd returns the index after the JSON string starting at body[i]
// (a quote), and whether it holds an escape.
func stringEnd(body []byte, i int) (int, bool) {
	escaped := false
	for j := i + 1; j < len(body); j++ {
		switch body[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return j + 1, escaped
		}
	}
	return len(body), escaped
}

func hex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
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
