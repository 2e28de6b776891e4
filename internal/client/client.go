// Package client is a typed Go client for dray's HTTP API (the contract is
// internal/server/openapi.yaml). It speaks JSON over net/http with a bearer
// token, turns the API's error documents into *Error, and follows a run's
// logs over Server-Sent Events.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// DefaultTimeout bounds each call that is not a stream (FollowLogs has no
// timeout: it lasts as long as the run).
const DefaultTimeout = 30 * time.Second

// Client calls one dray server. It is safe for concurrent use.
type Client struct {
	base    *url.URL
	token   string
	http    *http.Client
	timeout time.Duration
	agent   string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient makes the Client send its requests with hc (its Timeout, if
// any, also bounds streams: leave it zero and use WithTimeout instead).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithTimeout sets the time limit of each call that is not a stream (default
// DefaultTimeout; 0 for none).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithUserAgent sets the User-api.Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.agent = ua } }

// New returns a Client of the server at baseURL (such as
// http://127.0.0.1:8080), sending token as a bearer token when it is not
// empty. baseURL must be an absolute http or https URL.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := ParseURL(baseURL)
	if err != nil {
		return nil, err
	}
	c := &Client{base: u, token: token, http: http.DefaultClient, timeout: DefaultTimeout, agent: "dray-client"}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// ParseURL checks a server URL: absolute, http or https, with a host. A
// trailing slash is dropped.
func ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		msg := fmt.Sprintf("server URL %q: want http://HOST:PORT or https://HOST", raw)
		if raw != "" && !strings.Contains(raw, "://") {
			msg += fmt.Sprintf(" (such as http://%s)", raw)
		}
		return nil, errors.New(msg)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("server URL %q: want no query or fragment", raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// URL returns the server's base URL.
func (c *Client) URL() string { return c.base.String() }

// Error is an error the API answered with: the HTTP status and the
// `{"error": {"code", "message", "param"}}` document.
type Error struct {
	Status  int    // the HTTP status code
	Code    string // bad_request, bad_param, unauthenticated, forbidden, not_found, conflict, rate_limited, not_ready, internal
	Message string
	Param   string // the param at fault, for bad_param
}

func (e *Error) Error() string {
	msg := e.Text()
	code := e.Code
	if code == "" {
		code = strings.ToLower(strings.ReplaceAll(http.StatusText(e.Status), " ", "_"))
	}
	return fmt.Sprintf("%s (HTTP %d %s)", msg, e.Status, code)
}

// Text is the server's message for people: the status text when it sent
// none, and the param first when the message does not name it.
func (e *Error) Text() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Param != "" && !mentions(msg, e.Param) {
		msg = "param " + e.Param + ": " + msg
	}
	return msg
}

// mentions reports whether s has word with no letter, digit or _ on either side.
func mentions(s, word string) bool {
	isWord := func(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }
	for i := 0; ; {
		j := strings.Index(s[i:], word)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(word)
		before, _ := utf8.DecodeLastRuneInString(s[:start])
		after, _ := utf8.DecodeRuneInString(s[end:])
		if (start == 0 || !isWord(before)) && (end == len(s) || !isWord(after)) {
			return true
		}
		i = start + 1
	}
}

// UnreachableError is a call that got no HTTP answer: the server is down,
// the URL is wrong, or the network is in the way.
type UnreachableError struct {
	URL string // the server's base URL
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the dray server at %s: %v (is `dray server` running at %s? check --server or DRAY_SERVER)", e.URL, e.Err, e.URL)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// decodeError reads an error answer. A body that is not the API's error
// document (a proxy's page) is kept, cut short, as the message.
func decodeError(resp *http.Response) *Error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Status: resp.StatusCode}
	var doc struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Param   string `json:"param"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &doc) == nil && doc.Error != nil {
		e.Code, e.Message, e.Param = doc.Error.Code, doc.Error.Message, doc.Error.Param
		return e
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	e.Message = msg
	return e
}

// request is one API call.
type request struct {
	method string
	path   string // under the base URL, already escaped
	query  url.Values
	body   any // sent as JSON when not nil
	accept string
}

// send makes the request and returns the response when its status is 2xx;
// otherwise an *Error (wrapped with the call). The caller closes the body.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	op := r.method + " " + r.path
	target := c.base.String() + r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("%s: encode request: %w", op, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, target, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	accept := r.accept
	if accept == "" {
		accept = "application/json"
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", c.agent)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", op, ctx.Err())
		}
		return nil, fmt.Errorf("%s: %w", op, &UnreachableError{URL: c.URL(), Err: unwrapURLError(err)})
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, fmt.Errorf("%s: %w", op, decodeError(resp))
	}
	return resp, nil
}

// unwrapURLError drops the *url.Error layer, which repeats the method and URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// call makes a request bounded by the client's timeout and decodes a JSON
// answer into out (when out is not nil).
func (c *Client) call(ctx context.Context, r request, out any) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("%s %s: read answer: %w", r.method, r.path, err)
	}
	return nil
}

// seg escapes one path segment.
func seg(s string) string { return url.PathEscape(s) }
