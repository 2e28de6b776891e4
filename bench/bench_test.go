package main

import (
	"context"
	"testing"
	"testing/fstest"
	"time"

	"github.com/dray-dev/dray/internal/spec"
)

func mapFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for p, data := range files {
		fsys[p] = &fstest.MapFile{Data: []byte(data)}
	}
	if _, ok := fsys["dray.yaml"]; !ok {
		fsys["dray.yaml"] = &fstest.MapFile{Data: []byte(projectConfig)}
	}
	return fsys
}

// The generated projects must be valid, or the harness measures an error path.
func TestProjectsAreValid(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		pipelines int
		tasks     map[string]int
	}{
		{"chain", map[string]string{"pipelines/chain.yaml": chainPipeline(100)}, 1, map[string]int{"chain": 100}},
		{"fanout", map[string]string{"pipelines/fanout.yaml": fanoutPipeline("fanout", 100_000, 50)}, 1, map[string]int{"fanout": 1}},
		{"validate", validateFiles(20), 20, map[string]int{"p000": 10, "p019": 10}},
		{"first", map[string]string{"pipelines/first.yaml": firstPipeline}, 1, map[string]int{"first": 1}},
		{"few", map[string]string{"pipelines/few.yaml": fewPipeline}, 1, map[string]int{"few": 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proj, err := spec.Load(mapFS(tt.files))
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range proj.Errors {
				t.Errorf("%v", e)
			}
			if len(proj.Pipelines) != tt.pipelines {
				t.Errorf("%d pipelines, want %d", len(proj.Pipelines), tt.pipelines)
			}
			for name, n := range tt.tasks {
				p, err := proj.Pipeline(name)
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Tasks) != n {
					t.Errorf("pipeline %s has %d tasks, want %d", name, len(p.Tasks), n)
				}
			}
		})
	}
}

func TestParseProgress(t *testing.T) {
	tests := []struct {
		line        string
		done, total int
		ok          bool
	}{
		{"11:13:30  fan      running  0/1000", 0, 1000, true},
		{"11:13:31  fan      200/1000", 200, 1000, true},
		{"11:13:38  fan      succeeded  1000/1000", 1000, 1000, true},
		{"11:13:31  score    2/4", 0, 0, false}, // another task
		{"11:13:31  fan      running", 0, 0, false},
		{"fan   succeeded  1000 (1000 items)  8.3s", 0, 0, false}, // the summary
	}
	for _, tt := range tests {
		done, total, ok := parseProgress(tt.line, "fan")
		if ok != tt.ok || (ok && (done != tt.done || total != tt.total)) {
			t.Errorf("parseProgress(%q) = %d, %d, %v; want %d, %d, %v", tt.line, done, total, ok, tt.done, tt.total, tt.ok)
		}
	}
}

func TestPercentile(t *testing.T) {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[len(ds)-1-i] = time.Duration(i+1) * time.Millisecond // 100 ms … 1 ms, unsorted
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.95, 95 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0.001, time.Millisecond}}
	for _, tt := range tests {
		if got := percentile(ds, tt.p); got != tt.want {
			t.Errorf("percentile(1..100 ms, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := median(ds); got != 50500*time.Microsecond {
		t.Errorf("median(1..100 ms) = %v, want 50.5ms", got)
	}
	if got := median(ds[:3]); got != 99*time.Millisecond {
		t.Errorf("median(100, 99, 98 ms) = %v, want 99ms", got)
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("percentile sorted its argument")
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 100_000: "100,000", 1_234_567: "1,234,567"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}

// BenchmarkLoad200 loads the validate benchmark's project in process: what
// `dray validate` costs without starting a process (target for the whole
// command: under 1 s).
func BenchmarkLoad200(b *testing.B) {
	fsys := mapFS(validateFiles(200))
	for b.Loop() {
		proj, err := spec.Load(fsys)
		if err != nil || len(proj.Errors) > 0 {
			b.Fatalf("load: %v %v", err, proj.Errors)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/load")
	b.Logf("target: `dray validate` of 200 pipelines under 1 s, process start included")
}

// BenchmarkSpawn is the floor every task's overhead is compared with: one
// `sh -c true` started and waited for from Go.
func BenchmarkSpawn(b *testing.B) {
	ctx := context.Background()
	for b.Loop() {
		if err := spawn(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/spawn")
}

// BenchmarkSpawnParallel is the parallel floor: spawns per second from 50 goroutines.
func BenchmarkSpawnParallel(b *testing.B) {
	ctx := context.Background()
	b.SetParallelism(25) // × GOMAXPROCS goroutines; 50 on 2 CPUs
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := spawn(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "spawns/s")
}

func TestParseInitTrace(t *testing.T) {
	pkg, at, clock, ok := parseInitTrace("init github.com/santhosh-tekuri/jsonschema/v6 @41 ms, 16 ms clock, 2101864 bytes, 30342 allocs")
	if !ok || pkg != "github.com/santhosh-tekuri/jsonschema/v6" || at != 41*time.Millisecond || clock != 16*time.Millisecond {
		t.Errorf("parseInitTrace = %q, %v, %v, %v", pkg, at, clock, ok)
	}
	if _, _, clock, ok := parseInitTrace("init internal/bytealg @0.008 ms, 0.011 ms clock, 0 bytes, 0 allocs"); !ok || clock != 11*time.Microsecond {
		t.Errorf("parseInitTrace(bytealg) = %v, %v", clock, ok)
	}
	for _, l := range []string{"", "dray version dev", "init x @ms, 1 ms clock"} {
		if _, _, _, ok := parseInitTrace(l); ok {
			t.Errorf("parseInitTrace(%q) ok", l)
		}
	}
}
