package spec

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// schedule loads a pipeline with the given schedule (a YAML flow mapping).
func schedule(t *testing.T, sched string) *Schedule {
	t.Helper()
	proj := mustLoad(t, mapFS(map[string]string{"pipelines/s.yaml": "version: 1\nschedule: " + sched + "\ntasks: [{name: a, run: 'true'}]\n"}))
	if len(proj.Errors) > 0 {
		t.Fatalf("schedule %s: %v", sched, proj.Errors)
	}
	return mustPipeline(t, proj, "s").Schedule
}

// fires lists the fire times in (from, to], as local times with their offsets.
func fires(s *Schedule, from, to time.Time) []string {
	var out []string
	for t := s.Next(from); !t.IsZero() && !t.After(to); t = s.Next(t) {
		out = append(out, t.Format("2006-01-02 15:04 -07:00"))
		if len(out) > 200 {
			break
		}
	}
	return out
}

// TestScheduleNext checks fire times across DST changes: a local time that
// does not exist fires once, at the end of the gap, and one that occurs twice
// fires once, at its first occurrence, when the hour field names hours; with a
// wildcard hour every real hour fires. Every schedules are aligned to the
// Unix epoch in UTC.
func TestScheduleNext(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	newYork, _ := time.LoadLocation("America/New_York")
	lordHowe, _ := time.LoadLocation("Australia/Lord_Howe")
	saoPaulo, _ := time.LoadLocation("America/Sao_Paulo")
	tests := []struct {
		name     string
		schedule string
		from, to time.Time // (from, to]
		want     []string
	}{
		{
			name:     "Berlin spring forward: 02:30 does not exist, fires at 03:00",
			schedule: `{cron: "30 2 * * *", timezone: Europe/Berlin}`,
			from:     time.Date(2026, 3, 28, 0, 0, 0, 0, berlin), to: time.Date(2026, 3, 31, 0, 0, 0, 0, berlin),
			want: []string{"2026-03-28 02:30 +01:00", "2026-03-29 03:00 +02:00", "2026-03-30 02:30 +02:00"},
		},
		{
			name:     "Berlin fall back: 02:30 occurs twice, fires at the first",
			schedule: `{cron: "30 2 * * *", timezone: Europe/Berlin}`,
			from:     time.Date(2026, 10, 24, 0, 0, 0, 0, berlin), to: time.Date(2026, 10, 27, 0, 0, 0, 0, berlin),
			want: []string{"2026-10-24 02:30 +02:00", "2026-10-25 02:30 +02:00", "2026-10-26 02:30 +01:00"},
		},
		{
			name:     "Berlin hourly across spring forward: every real hour",
			schedule: `{cron: "0 * * * *", timezone: Europe/Berlin}`,
			from:     time.Date(2026, 3, 29, 0, 30, 0, 0, berlin), to: time.Date(2026, 3, 29, 4, 30, 0, 0, berlin),
			want: []string{"2026-03-29 01:00 +01:00", "2026-03-29 03:00 +02:00", "2026-03-29 04:00 +02:00"},
		},
		{
			name:     "Berlin @hourly across fall back: every real hour, 02:00 twice",
			schedule: `{cron: "@hourly", timezone: Europe/Berlin}`,
			from:     time.Date(2026, 10, 25, 0, 30, 0, 0, berlin), to: time.Date(2026, 10, 25, 3, 30, 0, 0, berlin),
			want: []string{"2026-10-25 01:00 +02:00", "2026-10-25 02:00 +02:00", "2026-10-25 02:00 +01:00", "2026-10-25 03:00 +01:00"},
		},
		{
			name:     "Berlin half past every hour across spring forward: the missing 02:30 does not fire",
			schedule: `{cron: "30 * * * *", timezone: Europe/Berlin}`,
			from:     time.Date(2026, 3, 29, 1, 0, 0, 0, berlin), to: time.Date(2026, 3, 29, 4, 0, 0, 0, berlin),
			want: []string{"2026-03-29 01:30 +01:00", "2026-03-29 03:30 +02:00"},
		},
		{
			name:     "Berlin every 2 hours (*/2) across fall back: both 02:00",
			schedule: `{cron: "0 */2 * * *", timezone: Europe/Berlin}`,
			from:     time.Date(2026, 10, 25, 0, 30, 0, 0, berlin), to: time.Date(2026, 10, 25, 5, 0, 0, 0, berlin),
			want: []string{"2026-10-25 02:00 +02:00", "2026-10-25 02:00 +01:00", "2026-10-25 04:00 +01:00"},
		},
		{
			name:     "Berlin minutes of a fixed hour across spring forward: one fire at 03:00",
			schedule: `{cron: "*/15 2 * * *", timezone: Europe/Berlin}`,
			from:     time.Date(2026, 3, 29, 0, 0, 0, 0, berlin), to: time.Date(2026, 3, 29, 23, 0, 0, 0, berlin),
			want: []string{"2026-03-29 03:00 +02:00"},
		},
		{
			name:     "Berlin minutes of a fixed hour across fall back: the first hour only",
			schedule: `{cron: "*/15 2 * * *", timezone: Europe/Berlin}`,
			from:     time.Date(2026, 10, 25, 0, 0, 0, 0, berlin), to: time.Date(2026, 10, 25, 23, 0, 0, 0, berlin),
			want: []string{"2026-10-25 02:00 +02:00", "2026-10-25 02:15 +02:00", "2026-10-25 02:30 +02:00", "2026-10-25 02:45 +02:00"},
		},
		{
			name:     "Berlin hours 1-3 across spring forward: 02:00 and 03:00 are one fire",
			schedule: `{cron: "0 1-3 * * *", timezone: Europe/Berlin}`,
			from:     time.Date(2026, 3, 29, 0, 0, 0, 0, berlin), to: time.Date(2026, 3, 29, 23, 0, 0, 0, berlin),
			want: []string{"2026-03-29 01:00 +01:00", "2026-03-29 03:00 +02:00"},
		},
		{
			name:     "New York spring forward: 02:30 fires at 03:00",
			schedule: `{cron: "30 2 * * *", timezone: America/New_York}`,
			from:     time.Date(2026, 3, 7, 12, 0, 0, 0, newYork), to: time.Date(2026, 3, 9, 12, 0, 0, 0, newYork),
			want: []string{"2026-03-08 03:00 -04:00", "2026-03-09 02:30 -04:00"},
		},
		{
			name:     "New York fall back: 01:30 fires once, in EDT",
			schedule: `{cron: "30 1 * * *", timezone: America/New_York}`,
			from:     time.Date(2026, 10, 31, 12, 0, 0, 0, newYork), to: time.Date(2026, 11, 2, 12, 0, 0, 0, newYork),
			want: []string{"2026-11-01 01:30 -04:00", "2026-11-02 01:30 -05:00"},
		},
		{
			name:     "New York every 30 minutes across fall back: each real half hour",
			schedule: `{cron: "*/30 * * * *", timezone: America/New_York}`,
			from:     time.Date(2026, 11, 1, 0, 45, 0, 0, newYork), to: time.Date(2026, 11, 1, 6, 45, 0, 0, time.UTC),
			want: []string{"2026-11-01 01:00 -04:00", "2026-11-01 01:30 -04:00", "2026-11-01 01:00 -05:00", "2026-11-01 01:30 -05:00"},
		},
		{
			name:     "Lord Howe half-hour shift forward: 02:15 fires at 02:30",
			schedule: `{cron: "15 2 * * *", timezone: Australia/Lord_Howe}`,
			from:     time.Date(2026, 10, 3, 12, 0, 0, 0, lordHowe), to: time.Date(2026, 10, 5, 12, 0, 0, 0, lordHowe),
			want: []string{"2026-10-04 02:30 +11:00", "2026-10-05 02:15 +11:00"},
		},
		{
			name:     "Lord Howe half-hour shift back: 01:45 fires once",
			schedule: `{cron: "45 1 * * *", timezone: Australia/Lord_Howe}`,
			from:     time.Date(2026, 4, 4, 12, 0, 0, 0, lordHowe), to: time.Date(2026, 4, 6, 12, 0, 0, 0, lordHowe),
			want: []string{"2026-04-05 01:45 +11:00", "2026-04-06 01:45 +10:30"},
		},
		{
			name:     "Sao Paulo 2018: midnight did not exist, @daily fires at 01:00",
			schedule: `{cron: "@daily", timezone: America/Sao_Paulo}`,
			from:     time.Date(2018, 11, 3, 12, 0, 0, 0, saoPaulo), to: time.Date(2018, 11, 5, 12, 0, 0, 0, saoPaulo),
			want: []string{"2018-11-04 01:00 -02:00", "2018-11-05 00:00 -02:00"},
		},
		{
			name:     "weekdays at 09:00 in Berlin",
			schedule: `{cron: "0 9 * * 1-5", timezone: Europe/Berlin}`,
			from:     time.Date(2026, 3, 27, 10, 0, 0, 0, berlin), to: time.Date(2026, 3, 31, 10, 0, 0, 0, berlin),
			want: []string{"2026-03-30 09:00 +02:00", "2026-03-31 09:00 +02:00"},
		},
		{
			name:     "every 15m: aligned to UTC quarter hours",
			schedule: `{every: 15m, timezone: Asia/Kolkata}`,
			from:     time.Date(2026, 1, 1, 10, 7, 0, 0, time.UTC), to: time.Date(2026, 1, 1, 10, 45, 0, 0, time.UTC),
			want: []string{"2026-01-01 15:45 +05:30", "2026-01-01 16:00 +05:30", "2026-01-01 16:15 +05:30"},
		},
		{
			name:     "every 7h: multiples of 7 hours since the Unix epoch",
			schedule: `{every: 7h}`,
			from:     time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), to: time.Date(1970, 1, 2, 4, 0, 0, 0, time.UTC),
			want: []string{"1970-01-01 07:00 +00:00", "1970-01-01 14:00 +00:00", "1970-01-01 21:00 +00:00", "1970-01-02 04:00 +00:00"},
		},
		{
			name:     "every 1h across Berlin fall back: every real hour",
			schedule: `{every: 1h, timezone: Europe/Berlin}`,
			from:     time.Date(2026, 10, 25, 1, 30, 0, 0, berlin), to: time.Date(2026, 10, 25, 3, 30, 0, 0, berlin),
			want: []string{"2026-10-25 02:00 +02:00", "2026-10-25 02:00 +01:00", "2026-10-25 03:00 +01:00"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := schedule(t, tt.schedule)
			got := fires(s, tt.from, tt.to)
			if !slices.Equal(got, tt.want) {
				t.Errorf("fires in (%s, %s]:\n got %q\nwant %q", tt.from, tt.to, got, tt.want)
			}
		})
	}
}

// TestScheduleNextFromAnyInstant checks that Next is the same as walking the
// fire times from far back: from any instant (including those inside a
// repeated hour) it returns the first fire time after it, never skipping one
// and never returning one twice.
func TestScheduleNextFromAnyInstant(t *testing.T) {
	exprs := []string{"30 2 * * *", "0 * * * *", "10 * * * *", "*/20 1-3 * * *", "0 */2 * * *", "45 1 * * *"}
	zones := []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"}
	days := []time.Time{
		time.Date(2026, 3, 8, 0, 0, 0, 0, time.UTC),   // New York forward
		time.Date(2026, 3, 29, 0, 0, 0, 0, time.UTC),  // Berlin forward
		time.Date(2026, 4, 5, 0, 0, 0, 0, time.UTC),   // Lord Howe back
		time.Date(2026, 10, 4, 0, 0, 0, 0, time.UTC),  // Lord Howe forward
		time.Date(2026, 10, 25, 0, 0, 0, 0, time.UTC), // Berlin back
		time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC),  // New York back
	}
	for _, zone := range zones {
		for _, e := range exprs {
			s := schedule(t, fmt.Sprintf("{cron: %q, timezone: %s}", e, zone))
			for _, day := range days {
				from, to := day.Add(-36*time.Hour), day.Add(36*time.Hour)
				// Walk the fire times from a day before, past the window's end.
				var all []time.Time
				for f := s.Next(from.Add(-24 * time.Hour)); f.Before(to.Add(48 * time.Hour)); f = s.Next(f) {
					if len(all) > 0 && !f.After(all[len(all)-1]) {
						t.Fatalf("%s %s: fire times not increasing: %v then %v", zone, e, all[len(all)-1], f)
					}
					all = append(all, f)
				}
				for at := from; at.Before(to); at = at.Add(7 * time.Minute) {
					i := slices.IndexFunc(all, func(f time.Time) bool { return f.After(at) })
					if i < 0 {
						t.Fatalf("%s %s: no fire time after %s", zone, e, at)
					}
					want := all[i]
					if got := s.Next(at); !got.Equal(want) {
						t.Errorf("%s %s: Next(%s) = %s, want %s", zone, e, at.In(s.Location), got, want.In(s.Location))
					}
				}
			}
		}
	}
}

// TestScheduleDecode checks the schedule keys' defaults and errors.
func TestScheduleDecode(t *testing.T) {
	s := schedule(t, `{cron: "0 2 * * *", catchup: true}`)
	if s.CatchupLimit != DefaultCatchupLimit || s.Location != time.UTC || s.Timezone != "UTC" {
		t.Errorf("defaults: catchup_limit %d, timezone %s", s.CatchupLimit, s.Timezone)
	}
	tests := []struct {
		schedule string
		want     string // in the error
	}{
		{`{cron: "TZ=UTC"}`, "give the time zone as timezone:"},
		{`{cron: "CRON_TZ=Europe/Berlin 0 2 * * *"}`, "give the time zone as timezone:"},
		{`{cron: "@every 5m"}`, "use every: under schedule"},
		{`{cron: "0 2 * *"}`, "want 5 fields"},
		{`{cron: "0 0 2 * * *"}`, "want 5 fields"},
		{`{cron: "@sometimes"}`, "bad cron expression"},
		{`{cron: "0 2 * * *", catchup: true, catchup_limit: 5000}`, "catchup_limit: at most 1000"},
		{`{cron: "0 2 * * *", catchup_limit: 0}`, "at least 1"},
		{`{cron: "0 2 * * *", every: 1h}`, "cron or every, not both"},
	}
	for _, tt := range tests {
		t.Run(tt.schedule, func(t *testing.T) {
			proj := mustLoad(t, mapFS(map[string]string{"pipelines/s.yaml": "version: 1\nschedule: " + tt.schedule + "\ntasks: [{name: a, run: 'true'}]\n"}))
			if !slices.ContainsFunc(proj.Errors, func(e *Error) bool { return strings.Contains(e.Message, tt.want) }) {
				t.Errorf("errors %v; want one containing %q", proj.Errors, tt.want)
			}
		})
	}
}
