// Command dray runs data pipelines: see `dray --help` and the README.
package main

import (
	"context"
	"os"
	_ "time/tzdata" // time zones for schedules, also in images without /usr/share/zoneinfo

	"github.com/dray-dev/dray/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
