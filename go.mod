module github.com/dray-dev/dray

go 1.26.0

require (
	github.com/expr-lang/expr v1.17.8
	github.com/robfig/cron/v3 v3.0.1
	github.com/santhosh-tekuri/jsonschema/v6 v6.0.3
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/sys v0.49.0
	golang.org/x/text v0.41.0
)
