package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/dray-dev/dray/internal/api"
	"io"
	"net/http"
	"strings"

	"github.com/dray-dev/dray/internal/control"
)

// The kinds of LogEvent.
const (
	EventLine    = "line"    // a log line
	EventAttempt = "attempt" // an attempt whose state changed
	EventEnd     = "end"     // the run ended and every line was sent
)

// LogEvent is one event of a followed run: a Line, an api.Attempt whose state
// changed, or, last, the End of the run with its record.
type LogEvent struct {
	Kind    string
	Line    *api.LogLine       // for EventLine
	Attempt *api.Attempt       // for EventAttempt
	Run     *control.RunRecord // for EventEnd
}

// ErrStreamEnded is returned by FollowLogs when the server closed the stream
// before the run's end event.
var ErrStreamEnded = errors.New("the log stream ended before the run did")

// FollowLogs streams a run's log (GET /api/v1/runs/{id}/logs?follow=true)
// and calls handle for every event in order: the lines so far, then new
// lines and attempt changes as they happen, and last the end of the run,
// after which it returns nil. It has no timeout: it returns when the run has
// ended, ctx ends, handle returns an error (that error), or the stream breaks
// (ErrStreamEnded, or the read error). Events of kinds it does not know are
// skipped. It does not reconnect.
func (c *Client) FollowLogs(ctx context.Context, runID string, opts LogOptions, handle func(LogEvent) error) error {
	q := opts.query()
	q.Set("follow", "true")
	path := "/api/v1/runs/" + seg(runID) + "/logs"
	resp, err := c.send(ctx, request{method: http.MethodGet, path: path, query: q, accept: "text/event-stream"})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	op := "follow logs of run " + runID
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return fmt.Errorf("%s: the server answered %q, not an event stream", op, ct)
	}
	ended := false
	err = ReadEvents(resp.Body, func(ev Event) error {
		le := LogEvent{Kind: ev.Type}
		var target any
		switch ev.Type {
		case EventLine:
			le.Line = &api.LogLine{}
			target = le.Line
		case EventAttempt:
			le.Attempt = &api.Attempt{}
			target = le.Attempt
		case EventEnd:
			le.Run = &control.RunRecord{}
			target = le.Run
		case "error":
			// A server may end a stream with an error document.
			apiErr := &Error{Status: resp.StatusCode}
			var doc struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
					Param   string `json:"param"`
				} `json:"error"`
			}
			if json.Unmarshal([]byte(ev.Data), &doc) == nil {
				apiErr.Code, apiErr.Message, apiErr.Param = doc.Error.Code, doc.Error.Message, doc.Error.Param
			} else {
				apiErr.Message = ev.Data
			}
			return apiErr
		default:
			return nil
		}
		if err := json.Unmarshal([]byte(ev.Data), target); err != nil {
			return fmt.Errorf("decode %s event %q: %w", ev.Type, clip(ev.Data, 200), err)
		}
		if err := handle(le); err != nil {
			return errHandler{err}
		}
		if ev.Type == EventEnd {
			ended = true
			return errStop
		}
		return nil
	})
	var he errHandler
	switch {
	case ended:
		return nil
	case errors.As(err, &he):
		return he.err
	case ctx.Err() != nil:
		return fmt.Errorf("%s: %w", op, ctx.Err())
	case err == nil:
		return fmt.Errorf("%s: %w", op, ErrStreamEnded)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// errHandler carries the error of FollowLogs's handler, to return it as is.
type errHandler struct{ err error }

func (e errHandler) Error() string { return e.err.Error() }

// errStop stops ReadEvents without an error.
var errStop = errors.New("stop")

// Event is one Server-Sent Event: its type ("message" when the stream names
// none), its data (the data fields joined with newlines) and its id.
type Event struct {
	Type string
	Data string
	ID   string
}

// ReadEvents reads a text/event-stream and calls handle for every event, in
// order, until the stream ends (it returns nil) or handle returns an error
// (it returns that error, or nil for errStop). It follows the WHATWG
// parsing rules: lines end with LF, CRLF or CR; a line starting with ':' is
// a comment; a field's value drops one leading space; a blank line dispatches
// the event; an event with no data field is not dispatched.
func ReadEvents(r io.Reader, handle func(Event) error) error {
	lr := &lineReader{br: bufio.NewReaderSize(r, 64<<10)}
	var (
		typ, id string
		data    strings.Builder
		hasData bool
	)
	for {
		line, err := lr.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				// An event not ended by a blank line is dropped, as the
				// spec says: the stream broke in the middle of it.
				return nil
			}
			return err
		}
		if line == "" {
			if hasData {
				ev := Event{Type: typ, Data: data.String(), ID: id}
				if ev.Type == "" {
					ev.Type = "message"
				}
				if err := handle(ev); err != nil {
					if errors.Is(err, errStop) {
						return nil
					}
					return err
				}
			}
			typ, hasData = "", false
			data.Reset()
			continue
		}
		if line[0] == ':' {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			typ = value
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				id = value
			}
		}
	}
}

// lineReader splits a stream into lines ending with LF, CRLF or CR.
type lineReader struct {
	br      *bufio.Reader
	pending []string // lines of a segment that held bare CRs
}

// next returns one line without its ending. At the end of the stream it
// returns io.EOF; a last line without its ending is not a complete line and
// is dropped.
func (l *lineReader) next() (string, error) {
	if len(l.pending) > 0 {
		line := l.pending[0]
		l.pending = l.pending[1:]
		return line, nil
	}
	var seg []byte
	for {
		chunk, err := l.br.ReadSlice('\n')
		seg = append(seg, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil {
			// Without a final LF, only what a CR ended is complete.
			i := bytes.LastIndexByte(seg, '\r')
			if i < 0 {
				return "", err
			}
			seg = seg[:i+1]
			break
		}
		seg = seg[:len(seg)-1]
		break
	}
	seg = bytes.TrimSuffix(seg, []byte{'\r'})
	if bytes.IndexByte(seg, '\r') < 0 {
		return string(seg), nil
	}
	lines := strings.Split(string(seg), "\r")
	l.pending = lines[1:]
	return lines[0], nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
