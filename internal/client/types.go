package client

// The documents of the API are in package api; these select what to read.

// RunFilter selects runs. Zero fields select everything.
type RunFilter struct {
	Pipeline string
	States   []string // queued, running, succeeded, failed, canceled
	Limit    int      // 1 to 500; 0 for the server's default (50)
	Cursor   string   // NextCursor of the previous page
}

// LogOptions select the lines of a run's log.
type LogOptions struct {
	Task    string // only this task
	Attempt int    // only this attempt number
}

// AuditFilter selects audit entries, newest first.
type AuditFilter struct {
	Actor  string
	Limit  int // 1 to 500; 0 for the server's default (100)
	Cursor string
}
