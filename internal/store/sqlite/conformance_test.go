package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/dray-dev/dray/internal/store"
	"github.com/dray-dev/dray/internal/store/sqlite"
	"github.com/dray-dev/dray/internal/store/storetest"
)

// TestConformance runs the store conformance suite on a SQLite file of each
// case's own.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "dray.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
		return s
	})
}
