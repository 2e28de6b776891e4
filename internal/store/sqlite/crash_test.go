package sqlite_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/sqlite"
)

// TestMain lets the test binary act as a writer process for TestCrash.
func TestMain(m *testing.M) {
	if path := os.Getenv("DRAY_TEST_WRITER"); path != "" {
		writer(path, os.Getenv("DRAY_TEST_SYNC"))
		return
	}
	os.Exit(m.Run())
}

// writer commits runs one a transaction and prints each id once its Update
// has returned, until it is killed.
func writer(path, sync string) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, path, sqlite.Options{Sync: sync})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for i := 1; ; i++ {
		id := strconv.Itoa(i)
		err := s.Update(ctx, func(tx store.Tx) error {
			return tx.InsertRun(ctx, &engine.Run{ID: id, Pipeline: "p", State: engine.RunQueued, CreatedAt: time.Now()})
		})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(id)
	}
}

// A transaction acknowledged by Update survives a kill -9 of the process, in
// both sync modes.
func TestCrash(t *testing.T) {
	for _, mode := range []string{sqlite.SyncNormal, sqlite.SyncFull} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dray.db")
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "DRAY_TEST_WRITER="+path, "DRAY_TEST_SYNC="+mode)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			acked := 0
			for sc.Scan() && acked < 200 {
				n, err := strconv.Atoi(sc.Text())
				if err != nil {
					t.Fatalf("writer: %s", sc.Text())
				}
				acked = n
			}
			cmd.Process.Kill()
			cmd.Wait()
			if acked < 200 {
				t.Fatalf("writer acknowledged only %d transactions", acked)
			}
			s, err := sqlite.Open(t.Context(), path, sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			err = s.View(t.Context(), func(tx store.Tx) error {
				for i := 1; i <= acked; i++ {
					if _, err := tx.Run(t.Context(), strconv.Itoa(i)); err != nil {
						return fmt.Errorf("acknowledged run %d is gone after the crash: %w", i, err)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "x.db"), sqlite.Options{Sync: "sometimes"}); err == nil {
		t.Error("a bad sync mode was accepted")
	}
}
