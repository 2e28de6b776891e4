package postgres_test

import (
	"testing"

	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/postgres/pgtest"
	"github.com/dray-dev/dray/internal/store/storetest"
)

// TestConformance runs the store conformance suite, each case on a schema of
// its own.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return pgtest.Open(t) })
}
