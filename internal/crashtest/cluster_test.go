package crashtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dray-dev/dray/internal/client"
)

// proc is one dray process the test started.
type proc struct {
	role string // server or scheduler
	gen  int    // unique within a cluster, in start order
	slot int    // a server's replica: its index in cluster.servers
	log  string // its stderr and stdout
	cmd  *exec.Cmd
	// killed is set before the test kills it: any other exit is a failure.
	killed atomic.Bool
	// done is closed once the process was reaped, exited just before.
	done   chan struct{}
	exited time.Time
	// logDone is closed when its output reached end of file.
	logDone chan struct{}

	// A scheduler's log tells when it became active, and when it declares a
	// server's agent gone: the start of a sweep, a moment worth a kill.
	active     chan struct{}
	activeOnce sync.Once
	lost       chan struct{}
}

// kill kills the process with SIGKILL and waits until it was reaped.
func (p *proc) kill() {
	p.killed.Store(true)
	_ = p.cmd.Process.Kill() // a pidfd on Linux: never another process
	<-p.done
}

// cluster is the dray processes on one store: one or more server replicas
// and a scheduler, each started again whenever the test kills it.
type cluster struct {
	t     *testing.T
	bin   string
	dir   string // the project
	work  string // logs and address files
	db    string
	token string
	mark  string
	hc    *http.Client

	mu      sync.Mutex
	gen     int
	servers []replica     // fixed in number; each holds its latest process
	ready   chan struct{} // closed and replaced whenever a replica serves
	procs   []*proc

	schedMu   sync.Mutex // one scheduler restart at a time
	scheduler *proc

	stats stats
}

// stats counts what the chaos did.
type stats struct {
	serverKills, serverKillsStarting  atomic.Int64
	schedKillsSweep, schedKillsRandom atomic.Int64
	schedKillsWithServer              atomic.Int64
	triggerRefused, triggerUnanswered atomic.Int64
	schedulerActivations              atomic.Int64
	// acked counts the triggers each replica acknowledged, and
	// seenElsewhere the runs that another server read back at once.
	acked         []atomic.Int64
	seenElsewhere atomic.Int64
}

// replica is one server of a cluster: the process started last in its
// place, and its URL once it serves.
type replica struct {
	p   *proc
	url string // "" while it starts, and once it was killed
}

// newCluster returns a cluster of the given number of server replicas, none
// started yet.
func newCluster(t *testing.T, bin, dir, work, db, mark string, servers int) *cluster {
	c := &cluster{
		t: t, bin: bin, dir: dir, work: work, db: db, mark: mark,
		servers: make([]replica, servers),
		ready:   make(chan struct{}),
		// A new connection a request: a request that fails to connect
		// surely did not reach the server.
		hc: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	}
	c.stats.acked = make([]atomic.Int64, servers)
	t.Cleanup(c.stop)
	return c
}

// start starts a dray process with the test's marks in its environment.
func (c *cluster) start(role string, gen, slot int, args ...string) (*proc, error) {
	p := &proc{
		role: role, gen: gen, slot: slot, log: filepath.Join(c.work, fmt.Sprintf("%s-%03d.log", role, gen)),
		done: make(chan struct{}), logDone: make(chan struct{}), active: make(chan struct{}), lost: make(chan struct{}, 64),
	}
	logFile, err := os.Create(p.log)
	if err != nil {
		return nil, err
	}
	// The process writes into a pipe of its own (an *os.File, so Wait does not
	// wait for whoever else may hold it); the test copies it to the log.
	r, w, err := os.Pipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	p.cmd = exec.Command(c.bin, append([]string{role, "--dir", c.dir, "--db", c.db}, args...)...)
	p.cmd.Env = append(os.Environ(), envMark+"="+c.mark, envGen+"="+strconv.Itoa(gen))
	p.cmd.Stdout, p.cmd.Stderr = w, w
	err = p.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		logFile.Close()
		return nil, fmt.Errorf("start dray %s: %w", role, err)
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	go func() {
		defer close(p.logDone)
		defer logFile.Close()
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			switch {
			case strings.Contains(line, `msg="scheduler active"`):
				p.activeOnce.Do(func() { close(p.active) })
			case strings.Contains(line, `msg="agent lost"`):
				select {
				case p.lost <- struct{}{}:
				default:
				}
			}
		}
	}()
	go func() {
		err := p.cmd.Wait()
		p.exited = time.Now()
		close(p.done)
		if !p.killed.Load() {
			<-p.logDone
			c.t.Errorf("dray %s (generation %d) exited by itself: %v\n%s", role, gen, err, tail(p.log, 30))
		}
	}()
	return p, nil
}

// startServer starts a server in the replica slot; awaitServer waits until
// it serves.
func (c *cluster) startServer(slot int) (*proc, error) {
	gen := c.nextGen()
	p, err := c.start("server", gen, slot, "--no-scheduler", "--capacity", strconv.Itoa(capacity),
		"--listen", "127.0.0.1:0", "--addr-file", c.addrFile(gen))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.servers[slot] = replica{p: p}
	c.mu.Unlock()
	return p, nil
}

// nextGen numbers a process about to start.
func (c *cluster) nextGen() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	return c.gen
}

func (c *cluster) addrFile(gen int) string {
	return filepath.Join(c.work, fmt.Sprintf("addr-%03d", gen))
}

// awaitServer waits until the server wrote its address, and makes it one of
// those the test's requests go to.
func (c *cluster) awaitServer(ctx context.Context, p *proc) error {
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(c.addrFile(p.gen))
		if err == nil && bytes.HasSuffix(b, []byte("\n")) {
			c.mu.Lock()
			if r := &c.servers[p.slot]; r.p == p {
				r.url = strings.TrimSpace(string(b))
				close(c.ready)
				c.ready = make(chan struct{})
			}
			c.mu.Unlock()
			return nil
		}
		select {
		case <-tick.C:
		case <-p.done:
			return fmt.Errorf("dray server (generation %d) exited before it served", p.gen)
		case <-ctx.Done():
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dray server (generation %d) wrote no address within a minute:\n%s", p.gen, tail(p.log, 20))
		}
	}
}

// killServer kills the server of a replica slot; requests go to the other
// replicas, or wait for one to serve.
func (c *cluster) killServer(slot int) {
	c.mu.Lock()
	r := &c.servers[slot]
	r.url = ""
	p := r.p
	c.mu.Unlock()
	p.kill()
}

// client returns a client of a replica that serves, chosen at random,
// waiting while none does.
func (c *cluster) client(ctx context.Context) (*client.Client, error) {
	return c.clientBut(ctx, "")
}

// clientBut is client, but it takes a replica other than the one at the URL
// not, when another serves.
func (c *cluster) clientBut(ctx context.Context, not string) (*client.Client, error) {
	for {
		c.mu.Lock()
		ready := c.ready
		var urls, others []string
		for _, r := range c.servers {
			if r.url != "" {
				urls = append(urls, r.url)
				if r.url != not {
					others = append(others, r.url)
				}
			}
		}
		c.mu.Unlock()
		if len(others) > 0 {
			urls = others
		}
		if len(urls) > 0 {
			return c.clientOf(urls[mrand.IntN(len(urls))])
		}
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for a server: %w", ctx.Err())
		}
	}
}

// slotOf returns the replica that serves at url, or -1 if none does.
func (c *cluster) slotOf(url string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range c.servers {
		if r.url == url {
			return i
		}
	}
	return -1
}

// replicaClients returns a client of each replica, for a time when every one
// serves.
func (c *cluster) replicaClients() ([]*client.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*client.Client, len(c.servers))
	for i, r := range c.servers {
		if r.url == "" {
			return nil, fmt.Errorf("server replica %d (generation %d) does not serve", i, r.p.gen)
		}
		var err error
		if out[i], err = c.clientOf(r.url); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (c *cluster) clientOf(url string) (*client.Client, error) {
	return client.New(url, c.token, client.WithHTTPClient(c.hc), client.WithTimeout(20*time.Second))
}

// currentServers returns the latest process of each replica.
func (c *cluster) currentServers() []*proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*proc, len(c.servers))
	for i, r := range c.servers {
		out[i] = r.p
	}
	return out
}

// startScheduler starts a scheduler.
func (c *cluster) startScheduler() error {
	p, err := c.start("scheduler", c.nextGen(), 0)
	if err != nil {
		return err
	}
	c.scheduler = p
	return nil
}

// restartScheduler kills the scheduler p and starts another, unless p was
// replaced already. It reports whether it killed p.
func (c *cluster) restartScheduler(p *proc) (bool, error) {
	c.schedMu.Lock()
	defer c.schedMu.Unlock()
	if c.scheduler != p {
		return false, nil
	}
	p.kill()
	return true, c.startScheduler()
}

func (c *cluster) currentScheduler() *proc {
	c.schedMu.Lock()
	defer c.schedMu.Unlock()
	return c.scheduler
}

// stop kills every process still running and waits for their output to end.
func (c *cluster) stop() {
	c.mu.Lock()
	procs := c.procs
	c.mu.Unlock()
	for _, p := range procs {
		select {
		case <-p.done:
		default:
			p.kill()
		}
	}
	for _, p := range procs {
		select {
		case <-p.logDone:
		case <-time.After(10 * time.Second):
			c.t.Errorf("the output of dray %s (generation %d) is still open 10s after it was killed: a child holds it", p.role, p.gen)
		}
	}
	c.hc.CloseIdleConnections()
}

// serverDeaths returns when each server was reaped, by generation. Call it
// after stop.
func (c *cluster) serverDeaths() map[int]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[int]time.Time{}
	for _, p := range c.procs {
		if p.role == "server" {
			<-p.done
			out[p.gen] = p.exited
		}
	}
	return out
}

// startsByReplica counts the tasks the ledger says each server replica's
// agents started.
func (c *cluster) startsByReplica(ledger []entry) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	slot := map[int]int{}
	for _, p := range c.procs {
		if p.role == "server" {
			slot[p.gen] = p.slot
		}
	}
	out := make([]int, len(c.servers))
	for _, e := range ledger {
		if i, ok := slot[e.gen]; ok && e.event == "start" {
			out[i]++
		}
	}
	return out
}

// strays returns the processes on this host that carry the test's mark and
// are not zombies: the test's processes and what they started.
func strays(mark string) []string {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []string{"list processes: " + err.Error()}
	}
	want := []byte(envMark + "=" + mark + "\x00")
	var out []string
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + ent.Name() + "/environ")
		if err != nil || !bytes.Contains(append(env, 0), want) {
			continue
		}
		stat, err := os.ReadFile("/proc/" + ent.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ...: a zombie has ended; its parent may not reap it.
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + ent.Name() + "/cmdline")
		out = append(out, fmt.Sprintf("pid %d: %s", pid, bytes.ReplaceAll(bytes.TrimRight(cmdline, "\x00"), []byte{0}, []byte{' '})))
	}
	return out
}

// killStrays kills the processes strays finds, by pid, and waits until they
// are gone. It returns what it found the first time.
func killStrays(mark string) []string {
	found := strays(mark)
	deadline := time.Now().Add(10 * time.Second)
	for left := found; len(left) > 0 && time.Now().Before(deadline); left = strays(mark) {
		for _, s := range left {
			var pid int
			if _, err := fmt.Sscanf(s, "pid %d:", &pid); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(20 * time.Millisecond) // a poll with a deadline: SIGKILL takes effect at once
	}
	return found
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + path + ":\n    " + strings.Join(lines, "\n    ")
}

// refused reports whether a request failed to connect: it did not reach the
// server, so it created nothing.
func refused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
