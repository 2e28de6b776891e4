package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestReadEvents(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   []Event
	}{
		{"one event", "event: line\ndata: {\"a\":1}\n\n", []Event{{Type: "line", Data: `{"a":1}`}}},
		{"default type", "data: x\n\n", []Event{{Type: "message", Data: "x"}}},
		{"no space after colon", "event:end\ndata:x\n\n", []Event{{Type: "end", Data: "x"}}},
		{"only one space is dropped", "data:  x \n\n", []Event{{Type: "message", Data: " x "}}},
		{"multi-line data", "data: a\ndata: b\ndata\n\n", []Event{{Type: "message", Data: "a\nb\n"}}},
		{"CRLF endings", "event: line\r\ndata: 1\r\n\r\nevent: end\r\ndata: 2\r\n\r\n",
			[]Event{{Type: "line", Data: "1"}, {Type: "end", Data: "2"}}},
		{"CR endings", "event: line\rdata: 1\r\rdata: 2\r\r",
			[]Event{{Type: "line", Data: "1"}, {Type: "message", Data: "2"}}},
		{"comments and unknown fields", ": keep-alive\nretry: 100\nfoo: bar\ndata: x\n\n", []Event{{Type: "message", Data: "x"}}},
		{"id is kept across events", "id: 7\ndata: a\n\ndata: b\n\n", []Event{{Type: "message", Data: "a", ID: "7"}, {Type: "message", Data: "b", ID: "7"}}},
		{"no data: not dispatched", "event: attempt\n\ndata: x\n\n", []Event{{Type: "message", Data: "x"}}},
		{"type resets after dispatch", "event: line\ndata: 1\n\ndata: 2\n\n", []Event{{Type: "line", Data: "1"}, {Type: "message", Data: "2"}}},
		{"unterminated last event is dropped", "data: 1\n\ndata: 2\n", []Event{{Type: "message", Data: "1"}}},
		{"unterminated last line is dropped", "data: 1\n\ndata: 2", []Event{{Type: "message", Data: "1"}}},
		{"empty data", "data\n\n", []Event{{Type: "message", Data: ""}}},
		{"long line", "data: " + strings.Repeat("x", 200<<10) + "\n\n", []Event{{Type: "message", Data: strings.Repeat("x", 200<<10)}}},
		{"empty stream", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []Event
			err := ReadEvents(strings.NewReader(tt.stream), func(ev Event) error {
				got = append(got, ev)
				return nil
			})
			if err != nil {
				t.Fatalf("ReadEvents: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReadEventsStopsOnHandlerError(t *testing.T) {
	boom := errors.New("boom")
	n := 0
	err := ReadEvents(strings.NewReader("data: 1\n\ndata: 2\n\n"), func(Event) error {
		n++
		return boom
	})
	if !errors.Is(err, boom) || n != 1 {
		t.Fatalf("err %v after %d events, want boom after 1", err, n)
	}
}

func TestReadEventsReturnsReadErrors(t *testing.T) {
	broken := io.MultiReader(strings.NewReader("data: 1\n\n"), iotestErrReader{errors.New("connection reset")})
	var got []Event
	err := ReadEvents(broken, func(ev Event) error { got = append(got, ev); return nil })
	if err == nil || !strings.Contains(err.Error(), "connection reset") || len(got) != 1 {
		t.Fatalf("got %v events, err %v; want 1 event and the read error", len(got), err)
	}
}

type iotestErrReader struct{ err error }

func (r iotestErrReader) Read([]byte) (int, error) { return 0, r.err }

func FuzzReadEvents(f *testing.F) {
	for _, s := range []string{
		"event: line\ndata: {}\n\n", "data: a\r\ndata: b\r\n\r\n", ": c\rdata\r\r", "data: x", "\n\n\n", "id: \x00\ndata: 1\n\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var events []Event
		if err := ReadEvents(strings.NewReader(s), func(ev Event) error {
			events = append(events, ev)
			return nil
		}); err != nil {
			t.Fatalf("ReadEvents of a string reader: %v", err)
		}
		// Each event needs at least a data field and a blank line.
		if len(events) > len(s)/5+1 {
			t.Fatalf("%d events from %d bytes", len(events), len(s))
		}
		for _, ev := range events {
			if ev.Type == "" || strings.ContainsAny(ev.Type, "\r\n") {
				t.Fatalf("bad event type %q", ev.Type)
			}
		}
	})
}

// sseServer answers the follow request with the given stream (checking the
// request), then closes it.
func sseServer(t *testing.T, stream string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/runs/01abc/logs" || r.URL.Query().Get("follow") != "true" {
			http.Error(w, "unexpected "+r.URL.String(), http.StatusTeapot)
			return
		}
		if got := r.URL.Query().Get("task"); got != "score" {
			http.Error(w, "task "+got, http.StatusTeapot)
			return
		}
		if r.Header.Get("Accept") != "text/event-stream" {
			http.Error(w, "accept "+r.Header.Get("Accept"), http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, stream)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestFollowLogs(t *testing.T) {
	stream := ": hello\n\n" +
		"event: line\ndata: {\"attempt_id\":3,\"task\":\"score\",\"index\":1,\"attempt\":1,\"seq\":1,\"stream\":\"stdout\",\"text\":\"hi\"}\n\n" +
		"event: progress\ndata: {}\n\n" +
		"event: attempt\ndata: {\"id\":3,\"task\":\"score\",\"index\":1,\"number\":1,\"item\":\"go\",\"state\":\"failed\",\"reason\":\"exit 1\"}\n\n" +
		"event: end\ndata: {\"id\":\"01abc\",\"pipeline\":\"p\",\"state\":\"failed\",\"params\":{}}\n\n" +
		"event: line\ndata: {\"text\":\"after the end\"}\n\n"
	c := newTestClient(t, sseServer(t, stream).URL)
	var got []string
	err := c.FollowLogs(context.Background(), "01abc", LogOptions{Task: "score"}, func(ev LogEvent) error {
		switch ev.Kind {
		case EventLine:
			got = append(got, fmt.Sprintf("line %s[%d]#%d %d %s", ev.Line.Task, ev.Line.Index, ev.Line.Attempt, ev.Line.Seq, ev.Line.Text))
		case EventAttempt:
			got = append(got, fmt.Sprintf("attempt %d %s %s item=%v", ev.Attempt.ID, ev.Attempt.State, ev.Attempt.Reason, ev.Attempt.HasItem()))
		case EventEnd:
			got = append(got, fmt.Sprintf("end %s %s", ev.Run.ID, ev.Run.State))
		default:
			got = append(got, "unexpected "+ev.Kind)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("FollowLogs: %v", err)
	}
	want := []string{"line score[1]#1 1 hi", "attempt 3 failed exit 1 item=true", "end 01abc failed"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events:\n got %q\nwant %q", got, want)
	}
}

func TestFollowLogsStreamEndsEarly(t *testing.T) {
	c := newTestClient(t, sseServer(t, "event: line\ndata: {\"text\":\"x\"}\n\n").URL)
	n := 0
	err := c.FollowLogs(context.Background(), "01abc", LogOptions{Task: "score"}, func(LogEvent) error { n++; return nil })
	if !errors.Is(err, ErrStreamEnded) || n != 1 {
		t.Fatalf("err %v after %d events, want ErrStreamEnded after 1", err, n)
	}
}

func TestFollowLogsHandlerError(t *testing.T) {
	c := newTestClient(t, sseServer(t, "event: line\ndata: {}\n\nevent: line\ndata: {}\n\n").URL)
	stop := errors.New("stop here")
	err := c.FollowLogs(context.Background(), "01abc", LogOptions{Task: "score"}, func(LogEvent) error { return stop })
	if err != stop {
		t.Fatalf("err %v, want the handler's error as is", err)
	}
}

func TestFollowLogsBadEvent(t *testing.T) {
	c := newTestClient(t, sseServer(t, "event: line\ndata: {not json\n\n").URL)
	err := c.FollowLogs(context.Background(), "01abc", LogOptions{Task: "score"}, func(LogEvent) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "decode line event") {
		t.Fatalf("err %v, want a decode error", err)
	}
}

func TestFollowLogsErrorEvent(t *testing.T) {
	c := newTestClient(t, sseServer(t, "event: error\ndata: {\"error\":{\"code\":\"internal\",\"message\":\"store gone\"}}\n\n").URL)
	err := c.FollowLogs(context.Background(), "01abc", LogOptions{Task: "score"}, func(LogEvent) error { return nil })
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Code != "internal" || apiErr.Message != "store gone" {
		t.Fatalf("err %v, want the error event as *Error", err)
	}
}

func TestFollowLogsCanceled(t *testing.T) {
	started := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "event: line\ndata: {\"text\":\"x\"}\n\n")
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	}))
	defer srv.Close()
	// A timeout must not apply to a stream: this one is far shorter than the
	// time the test takes to cancel.
	c, err := New(srv.URL, "tok", WithTimeout(1))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.FollowLogs(ctx, "01abc", LogOptions{}, func(LogEvent) error { return nil })
	}()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

func TestFollowLogsNotAStream(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"lines":[]}`)
	}))
	defer srv.Close()
	err := newTestClient(t, srv.URL).FollowLogs(context.Background(), "x", LogOptions{}, func(LogEvent) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "not an event stream") {
		t.Fatalf("err %v, want one that says the answer is not a stream", err)
	}
}
