package secrets

import (
	"strings"
	"testing"
)

func TestMask(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"no secrets", nil, "password is hunter2", "password is hunter2"},
		{"one", []string{"hunter2"}, "password is hunter2", "password is ***"},
		{"every occurrence", []string{"hunter2"}, "hunter2hunter2 and hunter2", "*** and ***"},
		{"every value", []string{"alpha", "omega"}, "alpha to omega", "*** to ***"},
		{"no match", []string{"hunter2"}, "nothing here", "nothing here"},
		{"short values are not masked", []string{"ab", "x", ""}, "ab x cab", "ab x cab"},
		{"three bytes are masked", []string{"abc"}, "xabcx", "x***x"},
		{"white space only is not masked", []string{"   ", "\t\t\t"}, "a   b\t\t\tc", "a   b\t\t\tc"},
		{"a secret containing another is masked whole", []string{"pass", "password123"}, "password123 pass", "*** ***"},
		{"order of values does not matter", []string{"password123", "pass"}, "password123 pass", "*** ***"},
		{"overlapping values leave no part", []string{"abcd", "cdef"}, "xabcdefx", "x***x"},
		{"overlapping occurrences of one value", []string{"aaa"}, "baaaab", "b***b"},
		{"multi-line value: each line", []string{"line one\nline two\r\nok\n"}, "got line two here; line one", "got *** here; ***"},
		{"multi-line value: whole", []string{"first\nsecond"}, "x first\nsecond y", "x *** y"},
		{"multi-line value: short lines are not masked", []string{"abc\nde\n"}, "abc de", "*** de"},
		{"duplicate values", []string{"dup", "dup"}, "dup", "***"},
		{"unicode", []string{"pässwörd"}, "le pässwörd est", "le *** est"},
		{"secret is the mask", []string{"***"}, "a *** b", "a *** b"},
		{"empty input", []string{"abc"}, "", ""},
		{"input shorter than a secret", []string{"abcdef"}, "abc", "abc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NewMasker(tt.secrets...).Mask(tt.in); got != tt.want {
				t.Fatalf("Mask(%q) with %q = %q; want %q", tt.in, tt.secrets, got, tt.want)
			}
		})
	}
}

func TestMaskNil(t *testing.T) {
	var m *Masker
	if got := m.Mask("hunter2"); got != "hunter2" {
		t.Fatalf("nil Masker: Mask = %q; want the input", got)
	}
}

func TestMaskNoMatchDoesNotAllocate(t *testing.T) {
	m := NewMasker(benchSecrets...)
	line := benchLine()
	if n := testing.AllocsPerRun(100, func() { _ = m.Mask(line) }); n != 0 {
		t.Fatalf("Mask of a line without secrets allocates %v times; want 0", n)
	}
}

// FuzzMask checks that no secret is left in masked text. Secrets holding '*'
// are left out: the mask itself could complete them.
func FuzzMask(f *testing.F) {
	f.Add("password123", "pass", "my password123 and pass")
	f.Add("abcd", "cdef", "abcdefabcd")
	f.Add("aaa", "aab", "aaaaab")
	f.Add("line1\nline2", "xyz", "line2 line1 xyz")
	f.Fuzz(func(t *testing.T, s1, s2, in string) {
		if strings.Contains(s1+s2, "*") {
			return
		}
		m := NewMasker(s1, s2)
		out := m.Mask(in)
		for _, v := range m.values {
			if strings.Contains(out, v) {
				t.Fatalf("Mask(%q) = %q still holds %q", in, out, v)
			}
		}
		if len(out) > len(in) && !strings.Contains(out, Mask) {
			t.Fatalf("Mask(%q) = %q grew without masking", in, out)
		}
	})
}

var benchSecrets = []string{
	"s3cr3t-p4ssw0rd",
	"AKIAIOSFODNN7EXAMPLE",
	"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	"ghp_16C7e42F292c6912E7710c838347Ae178B4a",
	"postgres://user:pw@db.internal:5432/prod",
}

// benchLine is a 200-byte log line.
func benchLine() string {
	line := `2024-05-01T02:00:13.412Z INFO loaded 18234 rows from s3://games-raw/events/2024-05-01/part-0007.parquet into staging.events_tmp (competition=eu-league, batch=7/12)`
	return (line + strings.Repeat(" ", 200))[:200]
}

func BenchmarkMask(b *testing.B) {
	m := NewMasker(benchSecrets...)
	clean := benchLine()
	dirty := clean[:100] + benchSecrets[1] + clean[100+len(benchSecrets[1]):]
	for _, bc := range []struct{ name, line string }{{"NoMatch", clean}, {"Match", dirty}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.line)))
			b.ReportAllocs()
			for b.Loop() {
				_ = m.Mask(bc.line)
			}
		})
	}
}
