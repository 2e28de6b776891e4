package server

import (
	"encoding/json"
	"fmt"
	"github.com/dray-dev/dray/internal/api"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dray-dev/dray/internal/auth"
	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

func newLogLine(a *engine.Attempt, l store.LogLine) api.LogLine {
	return api.LogLine{AttemptID: a.ID, Task: a.Task, Index: a.Index, Attempt: a.Number, Seq: l.Seq, Time: l.Time, Stream: l.Stream, Text: l.Text}
}

// logPage is how many lines one read of the store returns.
const logPage = 5000

func (s *Server) attemptLogs(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return &apiError{status: http.StatusBadRequest, code: codeBadRequest, param: "id", message: "attempt id " + r.PathValue("id") + ": want a positive whole number"}
	}
	after, err := queryInt(r, "after", 0, 0, 1<<62)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", 1000, 1, 10000)
	if err != nil {
		return err
	}
	var a *engine.Attempt
	err = s.cfg.Store.View(r.Context(), func(tx store.Tx) error {
		a, err = tx.Attempt(r.Context(), id)
		return err
	})
	if err != nil {
		return err
	}
	lines, err := s.cfg.Control.Logs(r.Context(), id, int64(after), limit)
	if err != nil {
		return err
	}
	out := api.LogPage{Lines: make([]api.LogLine, len(lines)), Next: int64(after)}
	for i, l := range lines {
		out.Lines[i] = newLogLine(a, l)
		out.Next = l.Seq
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) runLogs(w http.ResponseWriter, r *http.Request, _ *auth.Principal) error {
	id, err := s.runID(r)
	if err != nil {
		return err
	}
	task := r.URL.Query().Get("task")
	number, err := queryInt(r, "attempt", 0, 0, 1<<30)
	if err != nil {
		return err
	}
	follow, err := queryBool(r, "follow")
	if err != nil {
		return err
	}
	follow = follow || strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	// Check the run and task before answering, so errors are plain JSON.
	order, err := s.taskOrder(r.Context(), id, task)
	if err != nil {
		return err
	}
	if follow {
		return s.followLogs(w, r, id, task, number, order)
	}
	atts, err := s.attemptsInOrder(r.Context(), id, task, order)
	if err != nil {
		return err
	}
	out := api.LogPage{Lines: []api.LogLine{}}
	for _, a := range atts {
		if number > 0 && a.Number != number {
			continue
		}
		for after := int64(0); ; {
			lines, err := s.cfg.Control.Logs(r.Context(), a.ID, after, logPage)
			if err != nil {
				return err
			}
			for _, l := range lines {
				out.Lines = append(out.Lines, newLogLine(a, l))
				after = l.Seq
			}
			if len(lines) < logPage {
				break
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// followLogs streams a run's log lines as Server-Sent Events until the run
// has ended and every line was sent: `line` events, `attempt` events when an
// attempt's state changes, and one `end` event with the run's summary.
func (s *Server) followLogs(w http.ResponseWriter, r *http.Request, id, task string, number int, order map[string]int) error {
	flusher, ok := w.(http.Flusher)
	if !ok {
		return errorf(http.StatusInternalServerError, codeInternal, "streaming is not supported by this connection")
	}
	ctx := r.Context()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) error {
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data)
		return err
	}
	sent := map[int64]int64{}  // attempt id -> last seq sent
	seen := map[int64]string{} // attempt id -> last state sent
	tick := time.NewTicker(s.cfg.LogPoll)
	defer tick.Stop()
	keepAlive := time.NewTicker(15 * time.Second)
	defer keepAlive.Stop()
	for {
		// Read the run's state before the lines: when it has ended here, the
		// lines read after are all there will be.
		run, err := s.cfg.Control.Run(ctx, id)
		if err != nil {
			return nil // the stream has begun: end it
		}
		atts, err := s.attemptsInOrder(ctx, id, task, order)
		if err != nil {
			return nil
		}
		ended := run.State.Final()
		for _, a := range atts {
			if number > 0 && a.Number != number {
				continue
			}
			// A state change is sent before the attempt's lines, but an end
			// after them: the agent ships every line before it reports the
			// end, so the lines read now are all of them.
			changed := seen[a.ID] != string(a.State)
			if changed && !a.State.Final() {
				seen[a.ID] = string(a.State)
				if err := send("attempt", newAttemptDoc(a)); err != nil {
					return nil
				}
			}
			for {
				lines, err := s.cfg.Control.Logs(ctx, a.ID, sent[a.ID], logPage)
				if err != nil {
					return nil
				}
				for _, l := range lines {
					if err := send("line", newLogLine(a, l)); err != nil {
						return nil
					}
					sent[a.ID] = l.Seq
				}
				if len(lines) < logPage {
					break
				}
			}
			if changed && a.State.Final() {
				seen[a.ID] = string(a.State)
				if err := send("attempt", newAttemptDoc(a)); err != nil {
					return nil
				}
			}
			ended = ended && a.State.Final()
		}
		if ended {
			rec, err := s.cfg.Control.Summary(ctx, id)
			if err == nil {
				send("end", rec)
			}
			flusher.Flush()
			return nil
		}
		flusher.Flush()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-keepAlive.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return nil
			}
		}
	}
}
