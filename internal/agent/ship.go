package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dray-dev/dray/internal/executor"
	"github.com/dray-dev/dray/internal/secrets"
	"github.com/dray-dev/dray/internal/store"
)

// OutputMarker starts a stdout line that sets outputs: ::dray-output::{"k": v}.
const OutputMarker = "::dray-output::"

// Batching of log lines.
const (
	batchLines = 1000
	batchEvery = 200 * time.Millisecond
	// maxBuffered lines wait in memory at most; past that the task's output
	// waits for the shipper (the task blocks on its pipe) rather than lose lines.
	maxBuffered = 50_000
)

// shipper is an attempt's log sink: it masks secrets, numbers lines, ships
// them to the control plane in batches, and collects the outputs that stdout
// marker lines set.
type shipper struct {
	ctl     Control
	attempt int64
	mask    *secrets.Masker
	log     *slog.Logger

	mu        sync.Mutex
	cond      *sync.Cond
	buf       []store.LogLine
	seq       int64
	stdoutN   int
	closed    bool
	flushing  bool
	marked    map[string]json.RawMessage // outputs set by marker lines
	outputErr error

	kick    chan struct{}
	done    chan struct{}
	running bool // the loop goroutine has started (at the first line)
}

func newShipper(ctl Control, attempt int64, mask *secrets.Masker, log *slog.Logger) *shipper {
	s := &shipper{ctl: ctl, attempt: attempt, mask: mask, log: log, kick: make(chan struct{}, 1), done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// Line takes one line from the executor.
func (s *shipper) Line(l executor.Line) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.buf) >= maxBuffered && !s.closed {
		s.cond.Wait()
	}
	if l.Stream == executor.Stdout {
		s.stdoutN++
		if bytes.HasPrefix([]byte(l.Text), []byte(OutputMarker)) {
			s.outputLine(l.Text)
		}
	}
	s.seq++
	s.buf = append(s.buf, store.LogLine{Seq: s.seq, Time: l.Time.UTC(), Stream: l.Stream, Text: s.mask.Mask(l.Text)})
	if !s.running {
		// Most short tasks print nothing: ship only once there is something.
		s.running = true
		go s.loop()
	}
	if len(s.buf) >= batchLines {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// outputLine merges one marker line's object into the outputs; the first bad
// line is remembered and fails the attempt.
func (s *shipper) outputLine(text string) {
	if s.outputErr != nil {
		return
	}
	raw := text[len(OutputMarker):]
	obj, why := object([]byte(raw))
	if why != "" {
		s.outputErr = fmt.Errorf("stdout line %d: %s is %s: %s", s.stdoutN, OutputMarker, why, clip(text, 200))
		return
	}
	if s.marked == nil {
		s.marked = map[string]json.RawMessage{}
	}
	for k, v := range obj {
		s.marked[k] = v
	}
}

// object decodes a JSON object, or says why data is not one.
func object(data []byte) (map[string]json.RawMessage, string) {
	data = bytes.TrimSpace(data)
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, "invalid JSON (" + err.Error() + ")"
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		kind := map[byte]string{'[': "a list", '"': "a string", 'n': "null", 't': "a boolean", 'f': "a boolean"}[data[0]]
		if kind == "" {
			kind = "a number"
		}
		return nil, "not a JSON object but " + kind
	}
	return obj, ""
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("… (%d bytes)", len(s))
}

func (s *shipper) loop() {
	defer close(s.done)
	tick := time.NewTicker(batchEvery)
	defer tick.Stop()
	for {
		select {
		case <-s.kick:
		case <-tick.C:
		}
		s.mu.Lock()
		batch := s.buf
		s.buf = nil
		closed := s.closed
		s.cond.Broadcast()
		s.mu.Unlock()
		s.send(batch)
		if closed {
			s.mu.Lock()
			rest := s.buf
			s.buf = nil
			s.mu.Unlock()
			s.send(rest)
			return
		}
	}
}

// send ships a batch, trying again until it is taken: the control plane
// ignores lines it has already, so a batch sent twice is stored once.
func (s *shipper) send(batch []store.LogLine) {
	if len(batch) == 0 {
		return
	}
	b := newBackoff()
	ctx := context.Background()
	for attempt := 1; ; attempt++ {
		err := s.ctl.AppendLogs(ctx, s.attempt, batch)
		if err == nil {
			return
		}
		if attempt == 30 {
			s.log.Error("could not ship log lines; dropping them", "lines", len(batch), "err", err)
			return
		}
		s.log.Warn("ship log lines failed; trying again", "lines", len(batch), "err", err)
		b.wait(ctx)
	}
}

// close ships what is left and waits until it is shipped. It may be called
// more than once.
func (s *shipper) close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.cond.Broadcast()
	}
	running := s.running
	s.mu.Unlock()
	if !running {
		return // no line came, or none will now
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
	<-s.done
}

// outputs merges the outputs of marker lines with those of the $DRAY_OUTPUT
// file (whose keys win) and checks the size limit. nil means no outputs.
func (s *shipper) outputs(res executor.Result) (json.RawMessage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.outputErr != nil {
		return nil, s.outputErr
	}
	if res.OutputsError != "" {
		return nil, fmt.Errorf("outputs: %s", res.OutputsError)
	}
	if res.OutputsSize > executor.MaxOutputs {
		return nil, fmt.Errorf("outputs in $DRAY_OUTPUT are %s, over the %s limit: write big data to storage and output its URI", over(res.OutputsSize), size(executor.MaxOutputs))
	}
	merged := s.marked
	if len(bytes.TrimSpace(res.Outputs)) > 0 {
		obj, why := object(res.Outputs)
		if why != "" {
			return nil, fmt.Errorf("outputs in $DRAY_OUTPUT are %s: %s", why, clip(string(bytes.TrimSpace(res.Outputs)), 200))
		}
		if merged == nil {
			merged = map[string]json.RawMessage{}
		}
		for k, v := range obj {
			merged[k] = v
		}
	}
	if merged == nil {
		return nil, nil
	}
	data, err := json.Marshal(merged)
	if err != nil {
		return nil, fmt.Errorf("encode outputs: %w", err)
	}
	if len(data) > executor.MaxOutputs {
		return nil, fmt.Errorf("outputs are %s, over the %s limit: write big data to storage and output its URI", over(int64(len(data))), size(executor.MaxOutputs))
	}
	return data, nil
}

// size formats a byte count: 1.5 MiB, 800 KiB, 12 bytes.
func size(n int64) string {
	f := func(v float64, unit string) string {
		// Two decimals, so 1.05 MiB does not read as the 1 MiB limit.
		text := strings.TrimRight(fmt.Sprintf("%.2f", v), "0")
		return strings.TrimSuffix(text, ".") + " " + unit
	}
	switch {
	case n >= 1<<20:
		return f(float64(n)/(1<<20), "MiB")
	case n >= 1<<10:
		return f(float64(n)/(1<<10), "KiB")
	}
	return fmt.Sprintf("%d bytes", n)
}

// maskOutputs replaces secret values in outputs with ***, as in logs: a secret
// is never stored or passed on. Values are masked as written and as JSON
// escapes them. A secret that is not inside a JSON string (a bare number, a
// key) cannot be masked in place, and fails the attempt instead.
func maskOutputs(outputs json.RawMessage, values []string) (json.RawMessage, error) {
	if outputs == nil || len(values) == 0 {
		return outputs, nil
	}
	all := make([]string, 0, 2*len(values))
	for _, v := range values {
		all = append(all, v)
		if esc, err := json.Marshal(v); err == nil {
			all = append(all, string(esc[1:len(esc)-1]))
		}
	}
	masked := secrets.NewMasker(all...).Mask(string(outputs))
	if masked == string(outputs) {
		return outputs, nil
	}
	if !json.Valid([]byte(masked)) {
		return nil, fmt.Errorf("outputs contain a secret outside a JSON string; dray masks secrets in outputs, so write it inside a string or not at all")
	}
	return json.RawMessage(masked), nil
}

// over formats a size that is over the outputs limit, in bytes when rounding
// would make it read as the limit itself.
func over(n int64) string {
	if size(n) == size(executor.MaxOutputs) {
		return fmt.Sprintf("%d bytes", n)
	}
	return size(n)
}
