package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/dray-dev/dray/internal/store"
)

// spool holds an attempt's log lines on disk while the control plane cannot
// take them as fast as the task writes them (it is unreachable, or slow):
// lines past the memory limit go to a file, in order, and are shipped from
// it. The file is removed once it is empty.
type spool struct {
	path    string
	w       *os.File
	bw      *bufio.Writer
	r       *bufio.Reader
	rf      *os.File
	lines   int   // lines written and not yet read
	pending int64 // bytes written and not yet read
}

func openSpool(dir string, attempt int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("log spool: %w", err)
	}
	path := filepath.Join(dir, "attempt-"+strconv.FormatInt(attempt, 10)+".jsonl")
	w, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log spool: %w", err)
	}
	rf, err := os.Open(path)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("log spool: %w", err)
	}
	return &spool{path: path, w: w, rf: rf, r: bufio.NewReaderSize(rf, 64<<10)}, nil
}

func (s *spool) write(l store.LogLine) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if n, err := s.w.Write(b); err != nil {
		if n > 0 {
			// Cut the partial line off, so that reading stays in step.
			if off, serr := s.w.Seek(int64(-n), io.SeekCurrent); serr == nil {
				s.w.Truncate(off)
			}
		}
		return fmt.Errorf("log spool %s: %w", s.path, err)
	}
	s.lines++
	s.pending += int64(len(b))
	return nil
}

// read returns up to n lines, oldest first, of at most maxBytes in all (at
// least one line).
func (s *spool) read(n int, maxBytes int) ([]store.LogLine, error) {
	var out []store.LogLine
	size := 0
	for len(out) < n && s.lines > 0 && (size < maxBytes || len(out) == 0) {
		b, err := s.r.ReadBytes('\n')
		if err != nil {
			return out, fmt.Errorf("log spool %s: %w", s.path, err)
		}
		var l store.LogLine
		if err := json.Unmarshal(b, &l); err != nil {
			return out, fmt.Errorf("log spool %s: %w", s.path, err)
		}
		out = append(out, l)
		size += len(l.Text)
		s.lines--
		s.pending -= int64(len(b))
	}
	return out, nil
}

func (s *spool) close() {
	s.w.Close()
	s.rf.Close()
	os.Remove(s.path)
}
