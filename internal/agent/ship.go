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
	// batchBytes bounds the text of a batch, well under the server's 1 MiB
	// request limit.
	batchBytes = 512 << 10
	batchEvery = 200 * time.Millisecond
	// maxLineBytes is the longest line shipped in one piece; a longer one is
	// cut into lines of this size.
	maxLineBytes = 64 << 10
	// memLines lines wait in memory at most; past that they go to a spool
	// file on disk (the control plane is unreachable or slow).
	memLines = 20_000
	// maxSpoolBytes bounds an attempt's spool file; past that (or when the
	// disk fails) the task's output waits for the shipper: the task blocks on
	// its pipe rather than lose lines.
	maxSpoolBytes = 1 << 30
)

// shipper is an attempt's log sink: it masks secrets, numbers lines, ships
// them to the control plane in batches, and collects the outputs that stdout
// marker lines set. Lines are numbered from 1, so the control plane stores a
// line sent twice once, and an executor that re-reads a log from its start
// after an agent restart (docker) adds nothing twice.
type shipper struct {
	giveUp   context.Context // sending stops trying when it ends
	ctl      Control
	agent    string
	attempt  int64
	mask     *secrets.Masker
	log      *slog.Logger
	spoolDir string

	mu        sync.Mutex
	cond      *sync.Cond
	buf       []store.LogLine // oldest lines, shipped first
	spool     *spool          // newer lines, once buf is full
	spoolErr  error
	seq       int64
	stdoutN   int
	closed    bool
	marked    map[string]json.RawMessage // outputs set by marker lines
	outputErr error

	kick    chan struct{}
	done    chan struct{}
	running bool // the loop goroutine has started (at the first line)
}

func newShipper(giveUp context.Context, ctl Control, agentID string, attempt int64, mask *secrets.Masker, log *slog.Logger, spoolDir string) *shipper {
	s := &shipper{giveUp: giveUp, ctl: ctl, agent: agentID, attempt: attempt, mask: mask, log: log, spoolDir: spoolDir,
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	return s
}

// Line takes one line from the executor.
func (s *shipper) Line(l executor.Line) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l.Stream == executor.Stdout {
		s.stdoutN++
		if strings.HasPrefix(l.Text, OutputMarker) {
			s.outputLine(l.Text)
		}
	}
	text := s.mask.Mask(l.Text)
	for {
		piece := text
		if len(piece) > maxLineBytes {
			piece = text[:maxLineBytes]
		}
		s.seq++
		s.put(store.LogLine{Seq: s.seq, Time: l.Time.UTC(), Stream: l.Stream, Text: piece})
		text = text[len(piece):]
		if text == "" {
			break
		}
	}
	if !s.running {
		// Most short tasks print nothing: ship only once there is something.
		s.running = true
		go s.loop()
	}
	if len(s.buf) >= batchLines || s.spool != nil {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// put queues a line: in memory, or in the spool once memory is full (and
// from then on until the spool is shipped, to keep the order). When the
// spool is full or failed, it waits for the shipper.
func (s *shipper) put(l store.LogLine) {
	for {
		if s.spool == nil && len(s.buf) < memLines {
			s.buf = append(s.buf, l)
			return
		}
		if s.spool == nil && s.spoolErr == nil {
			s.spool, s.spoolErr = openSpool(s.spoolDir, s.attempt)
			if s.spoolErr != nil {
				s.log.Warn("cannot spool log lines to disk; the task waits for the control plane", "err", s.spoolErr)
			} else {
				s.log.Info("the control plane is behind: spooling log lines to disk", "file", s.spool.path)
			}
		}
		if s.spool != nil && s.spool.pending < maxSpoolBytes {
			err := s.spool.write(l)
			if err == nil {
				return
			}
			s.log.Warn("spool a log line; the task waits for the control plane", "err", err)
			s.spool.pending = maxSpoolBytes // wait for it to drain
		}
		if s.closed {
			s.buf = append(s.buf, l) // never drop: the loop is draining
			return
		}
		s.cond.Wait()
	}
}

// next takes the next batch: from memory first, then from the spool.
func (s *shipper) next() []store.LogLine {
	if len(s.buf) > 0 {
		n, size := 0, 0
		for n < len(s.buf) && n < batchLines && (size < batchBytes || n == 0) {
			size += len(s.buf[n].Text)
			n++
		}
		batch := s.buf[:n:n]
		s.buf = s.buf[n:]
		if len(s.buf) == 0 {
			s.buf = nil
		}
		return batch
	}
	if s.spool == nil {
		return nil
	}
	batch, err := s.spool.read(batchLines, batchBytes)
	if err != nil {
		s.log.Error("read log spool; its remaining lines are lost", "err", err)
		s.spool.lines = 0
	}
	if s.spool.lines == 0 {
		s.spool.close()
		s.spool = nil
	}
	return batch
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
		for {
			s.mu.Lock()
			batch := s.next()
			closed := s.closed
			s.cond.Broadcast()
			s.mu.Unlock()
			if len(batch) == 0 {
				if closed {
					return
				}
				break
			}
			s.send(batch)
			if len(batch) < batchLines && !closed {
				break // wait for more, not for every line
			}
		}
	}
}

// send ships a batch, trying again until it is taken: the control plane
// ignores lines it has already, so a batch sent twice is stored once. Only a
// refusal (the attempt is not this agent's, the token was revoked), or an
// agent that stops while the server is away, drops it.
func (s *shipper) send(batch []store.LogLine) {
	b := newBackoff()
	ctx := s.giveUp
	var firstFail time.Time
	for {
		if ctx.Err() != nil {
			s.log.Error("the agent stops and the server has not taken log lines: they are lost", "lines", len(batch))
			return
		}
		err := s.ctl.AgentLogs(ctx, s.agent, s.attempt, batch)
		if err == nil {
			if !firstFail.IsZero() {
				s.log.Info("log lines shipped again", "after", time.Since(firstFail).Round(time.Millisecond))
			}
			return
		}
		if !Transient(err) {
			s.log.Error("the control plane refused log lines; dropping them", "lines", len(batch), "err", err)
			return
		}
		if firstFail.IsZero() {
			firstFail = time.Now()
			s.log.Warn("ship log lines failed; keeping them and trying again", "lines", len(batch), "err", err)
		}
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
