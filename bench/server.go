package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// The server benchmarks run `dray server` as a process of its own and talk
// to it over loopback HTTP, as a user's scripts would.

// stateStore is where a server keeps its state: the project's SQLite file
// (db empty) or a PostgreSQL schema of the benchmark's own.
type stateStore struct {
	kind string // "SQLite" or "PostgreSQL"
	db   string // the --db value; empty for the project's .dray/dray.db
}

// envPostgres names the PostgreSQL database of dray's tests (scripts/postgres).
const envPostgres = "DRAY_TEST_POSTGRES"

// errNoPostgres marks a PostgreSQL benchmark on a machine without one.
var errNoPostgres = errors.New("skipped: " + envPostgres + " unset")

var sqliteStore = stateStore{kind: "SQLite"}

// postgresStore makes a fresh schema in the database of DRAY_TEST_POSTGRES
// (as internal/store/postgres/pgtest does for tests) and returns the store
// that selects it and a function that drops it. Without the variable it
// returns errNoPostgres.
func postgresStore(ctx context.Context) (stateStore, func(), error) {
	base := os.Getenv(envPostgres)
	if base == "" {
		return stateStore{}, nil, errNoPostgres
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "dray_bench_" + hex.EncodeToString(b[:])
	u, err := url.Parse(base)
	if err != nil || u.Scheme == "" {
		return stateStore{}, nil, fmt.Errorf("%s: want a postgres:// URL (scripts/postgres prints one)", envPostgres)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	if err := pgExec(ctx, base, `CREATE SCHEMA `+pgx.Identifier{schema}.Sanitize()); err != nil {
		return stateStore{}, nil, err
	}
	drop := func() {
		// Drop it even when the harness is being interrupted.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := pgExec(ctx, base, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
	}
	return stateStore{kind: "PostgreSQL", db: u.String()}, drop, nil
}

// pgConnect returns the median time of n connections to the database of
// DRAY_TEST_POSTGRES that each run SELECT 1: what a process pays for each
// connection it opens (TCP, password authentication, a round trip).
func pgConnect(ctx context.Context, n int) (time.Duration, error) {
	var walls []time.Duration
	for range n {
		start := time.Now()
		conn, err := pgx.Connect(ctx, os.Getenv(envPostgres))
		if err != nil {
			return 0, fmt.Errorf("connect to %s: %w", envPostgres, err)
		}
		var one int
		err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
		walls = append(walls, time.Since(start))
		conn.Close(context.WithoutCancel(ctx))
		if err != nil {
			return 0, fmt.Errorf("SELECT 1 on %s: %w", envPostgres, err)
		}
	}
	return median(walls), nil
}

// pgCosts are what PostgreSQL statements cost the harness, on one open
// connection: medians of n.
type pgCosts struct {
	roundTrip  time.Duration // SELECT 1
	commit     time.Duration // a one-row INSERT, its own transaction
	syncCommit string        // the server's synchronous_commit
}

func (c pgCosts) String() string {
	return fmt.Sprintf("from the harness on an open connection, a round trip (SELECT 1) takes %.2f ms and a one-row INSERT with its commit %.2f ms (medians; synchronous_commit=%s)",
		ms(c.roundTrip), ms(c.commit), c.syncCommit)
}

// pgCost measures pgCosts on the store's schema.
func pgCost(ctx context.Context, st stateStore, n int) (pgCosts, error) {
	var c pgCosts
	conn, err := pgx.Connect(ctx, st.db)
	if err != nil {
		return c, fmt.Errorf("connect to %s: %w", envPostgres, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, "SHOW synchronous_commit").Scan(&c.syncCommit); err != nil {
		return c, fmt.Errorf("SHOW synchronous_commit: %w", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS bench_commit (n integer)"); err != nil {
		return c, fmt.Errorf("create bench_commit: %w", err)
	}
	var trips, commits []time.Duration
	for i := range n {
		start := time.Now()
		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			return c, fmt.Errorf("SELECT 1: %w", err)
		}
		trips = append(trips, time.Since(start))
		start = time.Now()
		if _, err := conn.Exec(ctx, "INSERT INTO bench_commit VALUES ($1)", i); err != nil {
			return c, fmt.Errorf("insert into bench_commit: %w", err)
		}
		commits = append(commits, time.Since(start))
	}
	c.roundTrip, c.commit = median(trips), median(commits)
	return c, nil
}

// pgExec runs one statement on a connection of its own.
func pgExec(ctx context.Context, dsn, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect to %s: %w (is PostgreSQL running? scripts/postgres starts it)", envPostgres, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// dbArgs are the --db flag for st, if it needs one.
func (st stateStore) dbArgs() []string {
	if st.db == "" {
		return nil
	}
	return []string{"--db", st.db}
}

// createToken runs `dray token create` in the project folder dir and returns
// the token it prints.
func createToken(ctx context.Context, bin, dir string, st stateStore, role string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	args := append([]string{"token", "create", "--name", "bench", "--role", role}, st.dbArgs()...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("dray token create: %w\n%s", err, stderr.String())
	}
	tok := strings.TrimSpace(string(out))
	if !strings.HasPrefix(tok, "dray_") {
		return "", fmt.Errorf("dray token create printed %q, want a dray_ token", tok)
	}
	return tok, nil
}

// serverProc is a running `dray server`.
type serverProc struct {
	cmd     *exec.Cmd
	pid     int
	url     string    // set by waitListening
	addr    string    // the file it writes its URL to
	start   time.Time // just before exec
	stderr  *tailBuffer
	exited  chan struct{} // closed when the process has been waited for
	waitErr error
	profile string // the CPU profile it writes when it stops, if any
}

// serverOptions say how to start a server.
type serverOptions struct {
	store   stateStore
	args    []string // more flags
	profile string   // DRAY_CPUPROFILE, if set
}

// startServer starts `dray server` in the project folder dir on a free
// loopback port. It returns once the process runs; waitListening and
// waitReady wait for it to serve. The caller stops it with stop, also when
// anything fails.
func startServer(bin, dir string, o serverOptions) (*serverProc, error) {
	addrFile := filepath.Join(dir, fmt.Sprintf("addr-%d", time.Now().UnixNano()))
	args := append([]string{"server", "--listen", "127.0.0.1:0", "--addr-file", addrFile, "--grace", "2s"}, o.store.dbArgs()...)
	args = append(args, o.args...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NO_COLOR=1", "TERM=dumb")
	if o.profile != "" {
		cmd.Env = append(cmd.Env, "DRAY_CPUPROFILE="+o.profile)
	}
	// A group of its own: its tasks can be stopped with it, and a Ctrl-C at
	// the terminal reaches the harness only, which stops the server itself.
	// Should the harness die, the kernel kills the server.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Tasks that outlive it may hold its output open: do not wait for them.
	cmd.WaitDelay = 5 * time.Second
	s := &serverProc{cmd: cmd, addr: addrFile, stderr: &tailBuffer{max: 16 << 10}, exited: make(chan struct{}), profile: o.profile}
	cmd.Stdout = s.stderr
	cmd.Stderr = s.stderr
	s.start = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start dray server: %w", err)
	}
	s.pid = cmd.Process.Pid
	go func() {
		s.waitErr = cmd.Wait()
		close(s.exited)
	}()
	return s, nil
}

// waitListening waits until the server has written its address and returns
// how long after exec that was.
func (s *serverProc) waitListening(ctx context.Context, limit time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(limit)
	for {
		// The file is complete once it ends in a newline.
		if data, err := os.ReadFile(s.addr); err == nil && bytes.HasSuffix(data, []byte("\n")) {
			at := time.Since(s.start)
			s.url = strings.TrimSpace(string(data))
			return at, nil
		}
		if err := s.pause(ctx, deadline, time.Millisecond); err != nil {
			return 0, fmt.Errorf("dray server did not listen: %w", err)
		}
	}
}

// waitReady polls /readyz until it answers 200 and returns how long after
// exec that was.
func (s *serverProc) waitReady(ctx context.Context, limit time.Duration) (time.Duration, error) {
	if s.url == "" {
		if _, err := s.waitListening(ctx, limit); err != nil {
			return 0, err
		}
	}
	deadline := time.Now().Add(limit)
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/readyz", nil)
		if err != nil {
			return 0, err
		}
		if resp, err := hc.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(s.start), nil
			}
		}
		if err := s.pause(ctx, deadline, time.Millisecond); err != nil {
			return 0, fmt.Errorf("dray server not ready: %w", err)
		}
	}
}

// pause waits d, or fails when the server exited, the deadline passed or
// ctx ended.
func (s *serverProc) pause(ctx context.Context, deadline time.Time, d time.Duration) error {
	select {
	case <-s.exited:
		return fmt.Errorf("it exited (%v); its log ends:\n%s", s.waitErr, lastBytes(s.stderr.String(), 3000))
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
	}
	if time.Now().After(deadline) {
		return fmt.Errorf("not in time; its log ends:\n%s", lastBytes(s.stderr.String(), 3000))
	}
	return nil
}

// stop stops the server and whatever it started: SIGTERM, then after 10 s
// SIGKILL to its process group. It is safe to call more than once.
func (s *serverProc) stop() {
	if s == nil {
		return
	}
	select {
	case <-s.exited:
	default:
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-s.pid, syscall.SIGKILL)
			<-s.exited
		}
	}
	// Tasks it left behind, if any: the group is the server's pid.
	syscall.Kill(-s.pid, syscall.SIGKILL)
}

// apiClient calls the server's HTTP API with a bearer token.
type apiClient struct {
	base, token string
	hc          *http.Client
}

func newAPIClient(base, token string, conns int) *apiClient {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, DisableCompression: true, IdleConnTimeout: time.Minute}
	return &apiClient{base: base, token: token, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

func (c *apiClient) close() { c.hc.CloseIdleConnections() }

// do calls method path with body as JSON and decodes a 2xx answer into out.
func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// apiRun is the part of the API's Run the benchmarks read.
type apiRun struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
	Tasks     []struct {
		Name    string          `json:"name"`
		Outputs json.RawMessage `json:"outputs"`
	} `json:"tasks"`
}

// apiAttempt is the part of the API's Attempt the benchmarks read.
type apiAttempt struct {
	ID        int64      `json:"id"`
	Task      string     `json:"task"`
	Index     int        `json:"index"`
	Number    int        `json:"number"`
	State     string     `json:"state"`
	Reason    string     `json:"reason"`
	CreatedAt time.Time  `json:"created_at"`
	QueuedAt  *time.Time `json:"queued_at"`
	ClaimedAt *time.Time `json:"claimed_at"`
	StartedAt *time.Time `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at"`
}

func (c *apiClient) trigger(ctx context.Context, pipeline string) (*apiRun, error) {
	var r apiRun
	if err := c.do(ctx, http.MethodPost, "/api/v1/runs", map[string]any{"pipeline": pipeline}, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// waitRun polls the run, first after first and then every every, until it
// ends, and returns its record; a run that does not succeed is an error.
func (c *apiClient) waitRun(ctx context.Context, id string, first, every, limit time.Duration) (*apiRun, error) {
	deadline := time.Now().Add(limit)
	wait := first
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = every
		var r apiRun
		if err := c.do(ctx, http.MethodGet, "/api/v1/runs/"+id, nil, &r); err != nil {
			return nil, err
		}
		switch r.State {
		case "succeeded":
			return &r, nil
		case "failed", "canceled":
			return nil, fmt.Errorf("run %s %s: %s", id, r.State, r.Reason)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("run %s still %s after %s", id, r.State, limit)
		}
	}
}

func (c *apiClient) attempts(ctx context.Context, id string) ([]apiAttempt, error) {
	var out struct {
		Attempts []apiAttempt `json:"attempts"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/runs/"+id+"/attempts", nil, &out); err != nil {
		return nil, err
	}
	return out.Attempts, nil
}

// profileTop summarizes a CPU profile written by dray: the functions with
// the most CPU, cumulative (where the time goes, callers included) and flat.
func profileTop(ctx context.Context, bin, profile string) string {
	fi, err := os.Stat(profile)
	if err != nil || fi.Size() == 0 {
		return "(no CPU profile written)"
	}
	var b strings.Builder
	for _, view := range []struct {
		sortBy string
		nodes  int
	}{{"-cum", 20}, {"-flat", 12}} {
		n := fmt.Sprint(view.nodes)
		cmd := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", view.sortBy, "-nodecount="+n, bin, profile)
		out, err := cmd.Output()
		if err != nil {
			return fmt.Sprintf("(go tool pprof: %v)", err)
		}
		b.WriteString("$ go tool pprof -top " + view.sortBy + " -nodecount=" + n + " dray " + filepath.Base(profile) + "\n")
		b.Write(trimPprofHeader(out))
		b.WriteString("\n")
	}
	return strings.TrimRight(b.String(), "\n")
}

// trimPprofHeader drops the lines of pprof's header that name files.
func trimPprofHeader(out []byte) []byte {
	var keep [][]byte
	for _, l := range bytes.Split(out, []byte("\n")) {
		if bytes.HasPrefix(l, []byte("File:")) || bytes.HasPrefix(l, []byte("Build ID:")) || bytes.HasPrefix(l, []byte("Type:")) ||
			bytes.HasPrefix(l, []byte("Time:")) || bytes.HasPrefix(l, []byte("Showing top")) || bytes.HasPrefix(l, []byte("Dropped")) {
			continue
		}
		keep = append(keep, l)
	}
	return bytes.Join(keep, []byte("\n"))
}
