package mototest_test

import (
	"testing"

	"github.com/dray-dev/dray/internal/mototest"
)

func TestStart(t *testing.T) {
	s := mototest.Start(t)
	t.Log(s.URL)
}
