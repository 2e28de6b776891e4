package postgres_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/engine"
	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/postgres"
	"github.com/dray-dev/dray/internal/store/postgres/pgtest"
)

// TestMain lets the test binary act as a writer process for TestCrash.
func TestMain(m *testing.M) {
	if url := os.Getenv("DRAY_TEST_WRITER_URL"); url != "" {
		writer(url, os.Getenv("DRAY_TEST_WRITER_NAME"))
		return
	}
	os.Exit(m.Run())
}

// writer opens the store (migrating it, perhaps at the same moment as another
// writer), then commits runs one a transaction, each bumping a shared run
// too, and prints each run's id once its Update has returned, until it is
// killed.
func writer(url, name string) {
	ctx := context.Background()
	s, err := postgres.Open(ctx, url, postgres.Options{MaxConns: 2})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for i := 1; ; i++ {
		id := name + "-" + strconv.Itoa(i)
		err := s.Update(ctx, func(tx store.Tx) error {
			shared, err := tx.Run(ctx, "shared")
			if err != nil {
				return err
			}
			shared.Unfinished++
			if err := tx.UpdateRun(ctx, shared); err != nil {
				return err
			}
			return tx.InsertRun(ctx, &engine.Run{ID: id, Pipeline: "p", State: engine.RunQueued, CreatedAt: time.Now()})
		})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println(id)
	}
}

// A transaction acknowledged by Update is in the database after a kill -9 of
// the process that wrote it: two writers, killed while they commit, lost
// nothing they acknowledged and counted every commit once in the run they
// share.
func TestCrash(t *testing.T) {
	url := pgtest.EmptyURL(t)
	s, err := postgres.Open(t.Context(), url, postgres.Options{MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(t.Context(), func(tx store.Tx) error {
		return tx.InsertRun(t.Context(), &engine.Run{ID: "shared", Pipeline: "p", State: engine.RunRunning})
	}); err != nil {
		t.Fatal(err)
	}

	const want = 100 // acknowledged transactions a writer
	names := []string{"a", "b"}
	acked := make(chan int, len(names))
	for _, name := range names {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "DRAY_TEST_WRITER_URL="+url, "DRAY_TEST_WRITER_NAME="+name)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer func() {
				cmd.Process.Kill() // SIGKILL
				cmd.Wait()
			}()
			sc := bufio.NewScanner(out)
			n := 0
			for sc.Scan() && n < want {
				line := sc.Text()
				if !strings.HasPrefix(line, name+"-") {
					t.Errorf("writer %s: %s", name, line)
					break
				}
				n, _ = strconv.Atoi(strings.TrimPrefix(line, name+"-"))
			}
			acked <- n
		}()
	}
	total := map[string]int{}
	for _, name := range names {
		total[name] = <-acked
		if total[name] < want {
			t.Fatalf("a writer acknowledged only %d transactions", total[name])
		}
	}
	// A writer may have committed one more than it printed before it died.
	err = s.View(t.Context(), func(tx store.Tx) error {
		committed := 0
		for _, name := range names {
			for i := 1; ; i++ {
				_, err := tx.Run(t.Context(), name+"-"+strconv.Itoa(i))
				if err != nil && i <= total[name] {
					return fmt.Errorf("acknowledged run %s-%d is gone after the crash: %w", name, i, err)
				}
				if err != nil {
					break
				}
				committed++
			}
		}
		shared, err := tx.Run(t.Context(), "shared")
		if err != nil {
			return err
		}
		if shared.Unfinished != committed {
			t.Errorf("the shared run counts %d commits; %d runs were committed", shared.Unfinished, committed)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
