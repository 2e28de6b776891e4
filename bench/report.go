package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// machine is what the benchmarks ran on.
type machine struct {
	Date      time.Time
	NProc     int
	Memory    string // MemTotal
	CPU       string
	Kernel    string
	GoVersion string
	Commit    string // short hash, "+dirty" when the tree has changes
}

func describeMachine(ctx context.Context, root, rev string) machine {
	m := machine{Date: time.Now(), NProc: runtime.NumCPU(), CPU: "unknown CPU", Memory: "unknown"}
	if out, err := command(ctx, root, "nproc"); err == nil {
		if n, err := strconv.Atoi(out); err == nil {
			m.NProc = n
		}
	}
	if kb := procField("/proc/meminfo", "MemTotal:"); kb != "" {
		n, _ := strconv.ParseInt(strings.TrimSuffix(kb, " kB"), 10, 64)
		m.Memory = fmt.Sprintf("%.1f GiB", float64(n)/(1<<20))
	}
	if cpu := procField("/proc/cpuinfo", "model name"); cpu != "" {
		m.CPU = strings.TrimSpace(strings.TrimPrefix(cpu, ":"))
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(data))
	}
	m.GoVersion = runtime.Version()
	if out, err := command(ctx, root, "go", "version"); err == nil {
		m.GoVersion = strings.TrimPrefix(out, "go version ")
	}
	m.Commit = "unknown"
	if rev != "" {
		if out, err := command(ctx, root, "git", "rev-parse", "--short", rev); err == nil {
			m.Commit = out + " (-rev " + rev + ", not the working tree)"
		}
	} else if out, err := command(ctx, root, "git", "rev-parse", "--short", "HEAD"); err == nil {
		m.Commit = out
		// The results file is rewritten by every run, so it does not count.
		if st, err := command(ctx, root, "git", "status", "--porcelain", "--", ".", ":!bench/RESULTS.md"); err == nil && st != "" {
			m.Commit += "+dirty"
		}
	}
	return m
}

func command(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// loadAvg returns the 1-minute load average, which says how busy the machine
// was with other work while a benchmark ran.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// procField returns the rest of the first line of file that starts with key.
func procField(file, key string) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, key); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}

func printTable(w io.Writer, results []*result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCHMARK\tRESULT\tFIGURE\tTARGET")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Verdict, r.Figure, r.Target)
	}
	tw.Flush()
}

// report is the content of RESULTS.md.
type report struct {
	Machine machine
	Args    []string
	Quick   bool
	Sizes   sizes
	Results []*result
}

func (r *report) markdown() string {
	var b strings.Builder
	m := r.Machine
	b.WriteString("# dray benchmark results\n\n")
	b.WriteString("Written by `go run ./bench`; every run overwrites it. Each figure is measured\n")
	b.WriteString("in the same run as the floor it is compared with: the cost of starting\n")
	b.WriteString("`sh -c true` from Go on this machine.\n\n")
	b.WriteString("The server benchmarks (trigger-, hop-, coldstart, idle-rss, api-get-) run `dray server`\n")
	b.WriteString("as a process of its own, on SQLite or on a fresh schema of the PostgreSQL in\n")
	b.WriteString("DRAY_TEST_POSTGRES (skipped without it), and drive it over loopback HTTP with a\n")
	b.WriteString("token made by `dray token create` before it started. Their figures are absolute\n")
	b.WriteString("times: read them with the load average next to them.\n\n")
	cmdline := strings.TrimSpace("go run ./bench " + strings.Join(r.Args, " "))
	fmt.Fprintf(&b, "- date: %s\n", m.Date.Format("2006-01-02 15:04:05 MST"))
	fmt.Fprintf(&b, "- command: `%s`", cmdline)
	if r.Quick {
		b.WriteString(" (quick: smaller sizes, a smoke test; not the targets' sizes)")
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "- machine: %d CPUs (nproc), %s memory (MemTotal), %s, %s\n", m.NProc, m.Memory, m.CPU, m.Kernel)
	fmt.Fprintf(&b, "- Go: %s\n", m.GoVersion)
	fmt.Fprintf(&b, "- dray: commit %s, built with CGO_ENABLED=0\n", m.Commit)
	b.WriteString("- load avg: the machine's 1-minute load average when each benchmark started and ended;\n")
	fmt.Fprintf(&b, "  with %d CPUs, a figure above %d means other work shared the machine and the floors are slower too\n\n", m.NProc, m.NProc)

	b.WriteString("| benchmark | measured | figure | target | result | load avg (1 min) |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, res := range r.Results {
		fig := res.Figure
		if len(res.Notes) > 0 {
			fig += " <br>(" + strings.Join(res.Notes, "; ") + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | **%s** | %s |\n", res.Name, cell(res.Measured), cell(fig), cell(res.Target), res.Verdict, res.Load)
	}
	for _, res := range r.Results {
		if res.Timeline == "" {
			continue
		}
		if res.TimelineNote != "" {
			fmt.Fprintf(&b, "\n## %s: details\n\n%s\n\n```\n%s\n```\n", res.Name, res.TimelineNote, res.Timeline)
			continue
		}
		fmt.Fprintf(&b, "\n## %s: progress\n\nTimes are when the harness read dray's progress lines on its stdout.\n\n```\n%s\n```\n", res.Name, res.Timeline)
	}
	return b.String()
}

// cell escapes text for a markdown table cell.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}
