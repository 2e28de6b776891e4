package spec

import (
	"strings"
	"testing"
	"time"
)

func TestParseCPU(t *testing.T) {
	tests := []struct {
		in   string
		want int64 // millicores; 0: an error
	}{
		{"0.5", 500},
		{"2", 2000},
		{"0.25", 250},
		{"1.5", 1500},
		{"500m", 500},
		{"1m", 1},
		{"4000m", 4000},
		{"0.001", 1},
		{"0.0001", 0}, // less than a millicore
		{"0", 0},
		{"0m", 0},
		{"-1", 0},
		{"-500m", 0},
		{"m", 0},
		{"", 0},
		{"1.5m", 0},
		{"lots", 0},
		{"NaN", 0},
		{"Inf", 0},
		{"1e6", 0},
		{"2 ", 0},
	}
	for _, tc := range tests {
		got, err := ParseCPU(tc.in)
		if tc.want == 0 {
			if err == nil {
				t.Errorf("ParseCPU(%q) = %d, want an error", tc.in, got)
			} else if !strings.Contains(err.Error(), "cpu must be") {
				t.Errorf("ParseCPU(%q) error %q does not say what cpu must be", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseCPU(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseMemory(t *testing.T) {
	tests := []struct {
		in   string
		want int64 // bytes; 0: an error
	}{
		{"512Mi", 512 << 20},
		{"1Gi", 1 << 30},
		{"8Gi", 8 << 30},
		{"1.5Gi", 3 << 29},
		{"2Ti", 2 << 40},
		{"64Ki", 64 << 10},
		{"1G", 1e9},
		{"1M", 1e6},
		{"1k", 1e3},
		{"1K", 1e3},
		{"2T", 2e12},
		{"100", 100},
		{"0", 0},
		{"0Mi", 0},
		{"0.5", 0},
		{"8GB", 0},
		{"1Pi", 0},
		{"-1Gi", 0},
		{"1 Gi", 0},
		{"Gi", 0},
		{"1m", 0},
		{"", 0},
		{"9999999Ti", 0},
	}
	for _, tc := range tests {
		got, err := ParseMemory(tc.in)
		if tc.want == 0 {
			if err == nil {
				t.Errorf("ParseMemory(%q) = %d, want an error", tc.in, got)
			} else if !strings.Contains(err.Error(), "memory must be") {
				t.Errorf("ParseMemory(%q) error %q does not say what memory must be", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "30s", want: 30 * time.Second},
		{in: "15m", want: 15 * time.Minute},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "1.5h", want: 90 * time.Minute},
		{in: "250ms", want: 250 * time.Millisecond},
		{in: "2d", want: 48 * time.Hour},
		{in: "0.5d", want: 12 * time.Hour},
		{in: "0d", want: 0},
		{in: "0s", want: 0},
		{in: "0", want: 0}, // zero is zero in any unit
		{in: "106751d", want: 106751 * 24 * time.Hour},
		{in: "106752d", wantErr: `want a duration such as 30s, 15m or 2h, got "106752d"`},
		{in: "10", wantErr: `want a duration such as 30s, 15m or 2h, got "10"`},
		{in: "1.5", wantErr: `want a duration such as 30s, 15m or 2h, got "1.5"`},
		{in: "15 minutes", wantErr: `want a duration such as 30s, 15m or 2h, got "15 minutes"`},
		{in: "1w", wantErr: `want a duration such as 30s, 15m or 2h, got "1w"`},
		{in: "d", wantErr: `want a duration such as 30s, 15m or 2h, got "d"`},
		{in: "", wantErr: `want a duration such as 30s, 15m or 2h, got ""`},
		{in: "NaNd", wantErr: `want a duration such as 30s, 15m or 2h, got "NaNd"`},
		{in: "-5m", wantErr: `a duration cannot be negative, got "-5m"`},
		{in: "-1d", wantErr: `"-1d"`},
	}
	for _, tc := range tests {
		got, err := ParseDuration(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseDuration(%q) = %v, %v; want error %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}
