package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// projectConfig is the dray.yaml of every generated project.
const projectConfig = "version: 1\nproject: bench\n"

// chainPipeline is a pipeline of n tasks running `true`, each needing the one before.
func chainPipeline(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nname: chain\ndescription: %d tasks in a line, each running true.\ntasks:\n", n)
	for i := range n {
		fmt.Fprintf(&b, "  - name: t%d\n    run: \"true\"\n", i)
		if i > 0 {
			fmt.Fprintf(&b, "    needs: [t%d]\n", i-1)
		}
	}
	return b.String()
}

// fanoutPipeline is one task that runs `true` for each of n items, at most
// maxParallel at once.
func fanoutPipeline(name string, n, maxParallel int) string {
	return fmt.Sprintf(`version: 1
name: %s
description: One task running true for each of %d items.
tasks:
  - name: fan
    for_each: ${{ 0..%d }}
    max_parallel: %d
    run: "true"
`, name, n, n-1, maxParallel)
}

// validateTemplate is the template every pipeline of the validate project uses.
const validateTemplate = `version: 1
description: Print the top N of each board.
inputs:
  top:    { type: integer, default: 3 }
  boards: { type: array, description: "board files" }
task:
  env:
    TOP: "${{ inputs.top }}"
  run: echo top "${{ inputs.top }}" of ${{ join(inputs.boards, " ") }}
`

// validatePipeline is pipeline i of the validate project: ten tasks with
// needs, params, expressions, a for_each with checks and a template use.
func validatePipeline(i int) string {
	return fmt.Sprintf(`version: 1
name: p%03[1]d
description: Generated pipeline %[1]d of the validate benchmark.
tags: [bench, group%[2]d]
params:
  day:   { type: string, default: "${{ run.logical_date }}", description: "the day to process" }
  limit: { type: integer, default: %[3]d }
  mode:  { type: enum, values: [fast, full], default: fast }
  ratio: { type: number, default: 0.5 }
env:
  REGION: eu-%[2]d
defaults: { retries: 1, retry_delay: 2s, timeout: 5m }
tasks:
  - name: extract
    description: Fetch the day's rows.
    run: |
      echo '::dray-output::{"path": "data/${{ params.day }}.csv", "rows": %[3]d}'
  - name: list
    needs: [extract]
    run: |
      echo "${{ tasks.extract.outputs.path }}"
      echo '::dray-output::{"ids": ["a", "b", "c"]}'
  - name: shard
    needs: [list]
    for_each: ${{ tasks.list.outputs.ids }}
    max_parallel: 4
    env:
      SHARD: "${{ item }}"
    run: |
      echo '::dray-output::{"path": "data/${{ item }}.csv", "rows": ${{ params.limit * 2 }}}'
    checks:
      - expr: outputs.rows > 0
      - name: has a path
        expr: outputs.path != ""
        severity: warn
  - name: clean
    needs: [extract]
    if: ${{ params.mode == "full" }}
    run: echo clean "${{ tasks.extract.outputs.rows }}" rows
  - name: enrich
    needs: [extract]
    run: echo enrich ${{ params.ratio * 100 }} percent in "$REGION"
  - name: join
    needs: [clean, enrich]
    trigger: none_failed
    run: echo join "${{ tasks.extract.outputs.path }}"
  - name: stats
    needs: [join]
    retries: 2
    run: |
      echo '::dray-output::{"n": ${{ params.limit + %[1]d }}}'
  - name: report
    needs: [stats, shard]
    timeout: 1m
    run: echo report ${{ tasks.stats.outputs.n }} ${{ len(tasks.shard.outputs) }}
  - name: publish
    needs: [report, shard]
    trigger: none_failed
    if: ${{ params.limit > 0 && len(tasks.shard.outputs) > 0 }}
    uses: templates/publish.yaml
    with:
      top: "${{ params.limit }}"
      boards: "${{ map(tasks.shard.outputs, .path) }}"
  - name: notify
    needs: [publish]
    trigger: always
    run: echo done "${{ params.day }}"
`, i, i%10, 1+i%5)
}

// validateFiles are the pipeline and template files of a project of n pipelines,
// keyed by slash path.
func validateFiles(n int) map[string]string {
	files := map[string]string{
		"dray.yaml":              projectConfig,
		"templates/publish.yaml": validateTemplate,
	}
	for i := range n {
		files[fmt.Sprintf("pipelines/p%03d.yaml", i)] = validatePipeline(i)
	}
	return files
}

// writeProject makes a project folder under parent holding files (slash
// paths to contents) and returns its path. dray.yaml is added when missing.
func writeProject(parent, name string, files map[string]string) (string, error) {
	dir := filepath.Join(parent, name)
	if _, ok := files["dray.yaml"]; !ok {
		files["dray.yaml"] = projectConfig
	}
	for p, data := range files {
		path := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return "", fmt.Errorf("write project %s: %w", name, err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			return "", fmt.Errorf("write project %s: %w", name, err)
		}
	}
	return dir, nil
}

// firstPipeline is one task that outputs its shell's clock, in nanoseconds
// since 1970, as t: what a trigger starts.
const firstPipeline = `version: 1
name: first
description: One task that outputs the time it ran.
tasks:
  - name: only
    run: |
      echo "::dray-output::{\"t\": \"$(date +%s%N)\"}"
`

// fewPipeline is a small run to read back: four tasks, one a for_each of
// three items, with outputs.
const fewPipeline = `version: 1
name: few
description: Four tasks, one of them a for_each of three items.
tasks:
  - name: extract
    run: |
      echo '::dray-output::{"rows": 3, "path": "data/rows.csv"}'
  - name: shard
    needs: [extract]
    for_each: ${{ 0..2 }}
    run: |
      echo '::dray-output::{"shard": ${{ item }}}'
  - name: enrich
    needs: [extract]
    run: "true"
  - name: report
    needs: [shard, enrich]
    run: echo report ${{ tasks.extract.outputs.rows }}
`
