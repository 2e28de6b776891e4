// Package multihost holds dray's multi-host test, its own `go test` target:
//
//	go test -count=1 ./internal/multihost/
//
// The test needs a Docker Engine on this machine (see internal/dockertest)
// and the go command; it is skipped in -short mode only.
//
// It builds the dray binary as it ships (CGO_ENABLED=0) and an image FROM
// scratch with it and a static busybox, then runs a small cluster on a
// private Docker network: a `dray server --no-agent` and two `dray agent`s,
// each in a container of its own, as on three hosts. The agents have
// different labels (one eu, the other eu and gpu) and only the second can
// reach the engine, so it alone runs docker tasks. The test talks to the
// server through the port it publishes on 127.0.0.1, with internal/client,
// and checks what the issue asks of agents on other hosts:
//
//   - routing: a task goes to an agent with all its labels (and its
//     executor); a task whose label no agent has waits and says why;
//   - `docker kill` of the agent that runs a task: after the agent lease the
//     attempt is lost, and the other agent runs the retry;
//   - `docker network disconnect` of an agent for longer than a log batch,
//     then connect again: the task runs once and its log has every line
//     once, in order;
//   - `docker restart` of the server while agents run tasks: the run
//     succeeds, nothing is lost or run twice;
//   - `docker kill` of the server for longer than the agents' lease, then
//     start: the agents' work was not lost meanwhile, and runs once;
//   - `docker restart` of an agent (same --name) while it runs a docker
//     task: the new process re-attaches to the task's container, which runs
//     once, and the log has every line once.
//
// Everything the test creates (image, network, containers, and the task
// containers its agents start) carries the name prefix dray-mh-<random> and
// is removed when the test ends. When it fails, or DRAY_MULTIHOST_LOGS=1, the
// test logs the containers' logs.
package multihost
