package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
)

// lines returns lines from to to (inclusive) of an attempt's log, tagged so
// that lines of different attempts or batches differ.
func lines(tag string, from, to int64) []store.LogLine {
	var ls []store.LogLine
	for seq := from; seq <= to; seq++ {
		stream := "stdout"
		if seq%3 == 0 {
			stream = "stderr"
		}
		text := fmt.Sprintf("%s line %d ✓ \t", tag, seq)
		if seq%4 == 0 {
			text = ""
		}
		ls = append(ls, store.LogLine{Seq: seq, Time: t0.Add(time.Duration(seq)*time.Millisecond + 789*time.Nanosecond), Stream: stream, Text: text})
	}
	return ls
}

func appendLogs(t *testing.T, s store.Store, id int64, ls []store.LogLine) {
	t.Helper()
	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.AppendLogs(ctx, id, deepCopy(ls)) })
}

func readLogs(t *testing.T, s store.Store, id, after int64, limit int) []store.LogLine {
	t.Helper()
	return get(t, s, func(ctx context.Context, tx store.Tx) ([]store.LogLine, error) { return tx.Logs(ctx, id, after, limit) })
}

// testLogs: "AppendLogs records log lines of an attempt." "Logs returns up to
// limit lines of an attempt with Seq > after, by Seq." Paging visits every
// line once, and lines of two attempts do not mix.
func testLogs(t *testing.T, s store.Store) {
	a := newAttempt("run-1", "fan", 0, 1, engine.AttemptRunning)
	b := newAttempt("run-1", "fan", 1, 1, engine.AttemptRunning)
	insertAttempts(t, s, a, b)
	all := lines("a", 1, 10)
	// Interleave the attempts' batches; a's come in three.
	appendLogs(t, s, a.ID, all[:3])
	appendLogs(t, s, b.ID, lines("b", 1, 3))
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.AppendLogs(ctx, a.ID, all[3:7]); err != nil {
			return err
		}
		return tx.AppendLogs(ctx, a.ID, all[7:])
	})

	for _, c := range []struct {
		after int64
		limit int
		want  []store.LogLine
	}{
		{0, 100, all},
		{0, 4, all[:4]},
		{4, 4, all[4:8]},
		{8, 4, all[8:]},
		{10, 4, nil},
		{5, 1, all[5:6]},
		{9, 100, all[9:]},
	} {
		got := readLogs(t, s, a.ID, c.after, c.limit)
		checkEqual(t, fmt.Sprintf("Logs(after %d, limit %d)", c.after, c.limit), c.want, got)
	}
	checkEqual(t, "Logs of the other attempt", lines("b", 1, 3), readLogs(t, s, b.ID, 0, 100))
	if got := readLogs(t, s, b.ID+a.ID+100, 0, 100); len(got) != 0 {
		t.Errorf("Logs of an attempt with none: got %d lines", len(got))
	}

	// Paging by the last Seq of each page.
	var paged []store.LogLine
	for after, pages := int64(0), 0; pages <= len(all); pages++ {
		page := readLogs(t, s, a.ID, after, 3)
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		after = page[len(page)-1].Seq
	}
	checkEqual(t, "Logs paged 3 at a time", all, paged)
}

// testAppendLogsTwice: "Lines are keyed by (attempt, Seq): a line whose Seq
// is recorded already is ignored, so a batch sent twice is stored once."
func testAppendLogsTwice(t *testing.T, s store.Store) {
	a := newAttempt("run-1", "fan", 0, 1, engine.AttemptRunning)
	b := newAttempt("run-1", "fan", 1, 1, engine.AttemptRunning)
	insertAttempts(t, s, a, b)
	first := lines("first", 1, 5)
	appendLogs(t, s, a.ID, first)
	appendLogs(t, s, a.ID, first)
	checkEqual(t, "Logs after a batch was sent twice", first, readLogs(t, s, a.ID, 0, 100))

	// A batch that overlaps what is recorded: the recorded lines stay as
	// they are, the new ones are added.
	appendLogs(t, s, a.ID, lines("second", 4, 7))
	want := slices.Concat(first, lines("second", 6, 7))
	checkEqual(t, "Logs after an overlapping batch", want, readLogs(t, s, a.ID, 0, 100))

	// Twice in one transaction, and the same Seq for another attempt.
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.AppendLogs(ctx, a.ID, lines("third", 8, 9)); err != nil {
			return err
		}
		if err := tx.AppendLogs(ctx, a.ID, lines("third", 8, 9)); err != nil {
			return err
		}
		return tx.AppendLogs(ctx, b.ID, lines("b", 1, 9))
	})
	want = slices.Concat(want, lines("third", 8, 9))
	checkEqual(t, "Logs after a batch sent twice in one transaction", want, readLogs(t, s, a.ID, 0, 100))
	checkEqual(t, "Logs of the other attempt", lines("b", 1, 9), readLogs(t, s, b.ID, 0, 100))
}

// testSealLogs: "SealLogs records that an attempt's lines are now in blob
// storage under key and deletes them from the store." "Segment returns the
// sealed segment of an attempt (ErrNotFound)."
func testSealLogs(t *testing.T, s store.Store) {
	a := newAttempt("run-1", "fan", 0, 1, engine.AttemptSucceeded)
	b := newAttempt("run-1", "fan", 1, 1, engine.AttemptSucceeded)
	insertAttempts(t, s, a, b)
	appendLogs(t, s, a.ID, lines("a", 1, 20))
	appendLogs(t, s, b.ID, lines("b", 1, 5))
	seg := store.Segment{AttemptID: a.ID, Key: fmt.Sprintf("logs/run-1/fan/0/%d.log.zst", a.ID), Lines: 20, Bytes: 1 << 33}
	update(t, s, func(ctx context.Context, tx store.Tx) error { return tx.SealLogs(ctx, deepCopy(seg)) })

	if got := readLogs(t, s, a.ID, 0, 100); len(got) != 0 {
		t.Errorf("Logs of a sealed attempt: got %d lines, want none", len(got))
	}
	checkEqual(t, "Logs of an attempt not sealed", lines("b", 1, 5), readLogs(t, s, b.ID, 0, 100))
	view(t, s, func(ctx context.Context, tx store.Tx) error {
		got, err := tx.Segment(ctx, a.ID)
		if err != nil {
			return err
		}
		checkEqual(t, "Segment", seg, got)
		_, err = tx.Segment(ctx, b.ID)
		wantNotFound(t, "Segment of an attempt not sealed", err)
		return nil
	})
}

// testUnsealed: "Unsealed returns up to limit ended attempts whose log lines
// are still in the store, oldest first": not attempts still running, not
// sealed ones, not ones without lines.
func testUnsealed(t *testing.T, s store.Store) {
	type spec struct {
		state  engine.AttemptState
		lines  bool
		sealed bool
	}
	specs := []spec{
		{engine.AttemptSucceeded, true, false}, // 0
		{engine.AttemptRunning, true, false},   // 1: running
		{engine.AttemptFailed, true, true},     // 2: sealed
		{engine.AttemptFailed, false, false},   // 3: no lines
		{engine.AttemptLost, true, false},      // 4
		{engine.AttemptClaimed, true, false},   // 5: not ended
		{engine.AttemptCanceled, true, false},  // 6
		{engine.AttemptFailed, true, false},    // 7
	}
	var as []*engine.Attempt
	for i, sp := range specs {
		a := newAttempt("run-1", "fan", i, 1, sp.state)
		if sp.state.Final() {
			a.EndedAt = t0.Add(time.Duration(i) * time.Second)
		}
		as = append(as, a)
	}
	insertAttempts(t, s, as...)
	for i, sp := range specs {
		if sp.lines {
			appendLogs(t, s, as[i].ID, lines("x", 1, 3))
		}
		if sp.sealed {
			update(t, s, func(ctx context.Context, tx store.Tx) error {
				return tx.SealLogs(ctx, store.Segment{AttemptID: as[i].ID, Key: "k", Lines: 3, Bytes: 30})
			})
		}
	}
	unsealed := func(limit int) []int64 {
		return get(t, s, func(ctx context.Context, tx store.Tx) ([]int64, error) { return tx.Unsealed(ctx, limit) })
	}
	ids := func(is ...int) []int64 {
		var out []int64
		for _, i := range is {
			out = append(out, as[i].ID)
		}
		return out
	}
	for _, c := range []struct {
		limit int
		want  []int64
	}{
		{100, ids(0, 4, 6, 7)},
		{2, ids(0, 4)},
	} {
		if got := unsealed(c.limit); !slices.Equal(got, c.want) {
			t.Errorf("Unsealed(%d) = %v, want %v", c.limit, got, c.want)
		}
	}

	// Sealing one takes it off the list; the running one ends and joins it.
	update(t, s, func(ctx context.Context, tx store.Tx) error {
		if err := tx.SealLogs(ctx, store.Segment{AttemptID: as[0].ID, Key: "k0", Lines: 3, Bytes: 30}); err != nil {
			return err
		}
		as[1].State, as[1].EndedAt = engine.AttemptSucceeded, t0.Add(time.Minute)
		return tx.UpdateAttempt(ctx, as[1])
	})
	if got, want := unsealed(100), ids(1, 4, 6, 7); !slices.Equal(slices.Sorted(slices.Values(got)), want) {
		t.Errorf("Unsealed after sealing one and ending another = %v, want %v in some order", got, want)
	}
}
