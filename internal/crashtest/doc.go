// Package crashtest holds dray's crash-safety test (issue 5), its own `go test`
// target:
//
//	export DRAY_TEST_POSTGRES=$(scripts/postgres)
//	go test -count=1 ./internal/crashtest/
//
// The test builds the real dray binary and runs it as real processes: a
// `dray server --no-scheduler` (the HTTP API and an in-process agent with the
// local executor) and a separate `dray scheduler`, both on one store: a SQLite
// file in one subtest, a PostgreSQL schema in another, side by side (without
// DRAY_TEST_POSTGRES the PostgreSQL ones skip, or fail with
// DRAY_REQUIRE_POSTGRES=1, as pgtest does). Each triggers a few hundred runs
// through the API while it kills the server and the scheduler with SIGKILL at
// random moments (some of them while the scheduler sweeps the agents of dead
// servers) and starts them again. Then it stops killing and waits until every
// run has ended.
//
// Two more subtests run two server replicas (each with its agent and its
// address) and one scheduler on one PostgreSQL schema (docs/operations.md):
// each trigger goes to a replica chosen at random, and the run it made is at
// once read back from the other. One kills a replica at a time, the other
// serving meanwhile, and the scheduler, and checks what the others check. One
// kills nothing: then every task instance runs exactly once, and both agents,
// claiming from one queue, run a share of them. In every subtest each replica
// answers the same record of every run, and each succeeded attempt's log
// holds the line its task printed last.
//
// The tasks are a small program (testdata/task): each appends a start and an
// end line to a ledger file (one O_APPEND write a line, so the lines of
// concurrent tasks never mix; a line a SIGKILL cut short stands alone and is
// ignored, its task having reported nothing) and sleeps a little in between, so that kills
// land in the middle of tasks. The ledger says what really ran, the store and
// the API what dray recorded; the test checks that they agree with DESIGN.md
// ("A crash of any process loses no run and runs no finished task again"):
//
//   - every run the API acknowledged exists and ended, and succeeded: no task
//     fails by itself, and retries cover the attempts the kills lose;
//   - no attempt is left pending, queued, claimed or running;
//   - each task instance has attempts numbered 1..n, the last one succeeded
//     and every earlier one lost, and nothing started after the success:
//     delivery is at least once (a task whose result was not recorded when
//     its server died runs again), never again after a recorded success;
//   - each attempt ran at most once, as the store describes it, and one
//     recorded succeeded did run to its end;
//   - no task outlived the server that started it, and no process the test
//     started is left when it ends.
//
// Set DRAY_CRASHTEST_DIR to a folder to keep the project, the SQLite store,
// the ledger and every process's log there (and the PostgreSQL schema, which
// the test then names in its log: drop it when done). When runs do not end,
// the test logs what they wait for and a goroutine dump of the servers and
// the scheduler (SIGQUIT).
package crashtest
