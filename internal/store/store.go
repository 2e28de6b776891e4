// Package store defines where dray keeps its state: runs, tasks, fan-out items,
// attempts, the live tail of logs, agents and the pipeline specs runs started
// with. Implementations live in subpackages (sqlite, postgres) and prove
// themselves with the shared conformance suite in storetest.
//
// Every state change happens inside Update, in one transaction: the run engine's
// decisions are written whole or not at all.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/dray-dev/dray/internal/engine"
)

// Errors callers test with errors.Is.
var (
	// ErrNotFound: no row with that key.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: a run id prefix matches more than one run.
	ErrAmbiguous = errors.New("ambiguous id prefix")
	// ErrConflict: a row was changed by someone else (an attempt that was no
	// longer in the state the update expected).
	ErrConflict = errors.New("conflict")
	// ErrLocked: the database stayed locked by another process for longer
	// than the store waits.
	ErrLocked = errors.New("database is locked")
	// ErrFull: the disk (or the database's size limit) is full.
	ErrFull = errors.New("database or disk is full")
)

// Store is a dray state store.
type Store interface {
	// Update runs fn in a read-write transaction and commits when fn returns
	// nil; it rolls back when fn returns an error or panics. Update
	// transactions of one run are serialized: in Update, Tx.Run locks the
	// run's row until the transaction ends.
	Update(ctx context.Context, fn func(Tx) error) error
	// View runs fn in a read-only transaction that sees one consistent snapshot.
	View(ctx context.Context, fn func(Tx) error) error
	// Close releases the store's connections.
	Close() error
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// Listen calls fn with the name of every event published with Tx.Notify
	// after its transaction committed, in this process and (where the database
	// can tell other processes, as PostgreSQL can) in every process on the same
	// database. It returns when ctx ends; fn must not block. A store that
	// cannot reach other processes delivers only this process's events.
	Listen(ctx context.Context, fn func(event string)) error
}

// Tx reads and writes within one transaction. Times are stored with
// microsecond precision, in UTC; a zero time stays zero.
type Tx interface {
	// PutSpec records the source files of a pipeline spec under its hash. It
	// is idempotent.
	PutSpec(ctx context.Context, hash string, sources map[string][]byte) error
	// Spec returns the sources recorded under hash.
	Spec(ctx context.Context, hash string) (map[string][]byte, error)

	// InsertRun records a new run; its ID must be unique.
	InsertRun(ctx context.Context, r *engine.Run) error
	// UpdateRun writes a run's progress: State, Reason, Env, Driver,
	// CancelRequested, Unfinished, StartedAt and EndedAt. The other fields
	// never change after InsertRun.
	UpdateRun(ctx context.Context, r *engine.Run) error
	// Run returns a run by id (ErrNotFound).
	Run(ctx context.Context, id string) (*engine.Run, error)
	// ResolveRunID returns the id of the one run whose id starts with prefix
	// (ErrNotFound, ErrAmbiguous). A full id resolves to itself.
	ResolveRunID(ctx context.Context, prefix string) (string, error)
	// Runs lists runs, newest first (by CreatedAt, then ID).
	Runs(ctx context.Context, f RunFilter) ([]*engine.Run, error)
	// CountRuns counts the runs of a pipeline in a state.
	CountRuns(ctx context.Context, pipeline string, state engine.RunState) (int, error)

	// PutTasks inserts or replaces task rows (keyed by run and name).
	PutTasks(ctx context.Context, tasks []*engine.Task) error
	// Task returns one task of a run, with its outputs (ErrNotFound).
	Task(ctx context.Context, runID, name string) (*engine.Task, error)
	// Tasks returns every task of a run, in no particular order.
	Tasks(ctx context.Context, runID string) ([]*engine.Task, error)

	// InsertItems records the items of a for_each task, index 0 upward.
	InsertItems(ctx context.Context, runID, task string, values []json.RawMessage) error
	// Item returns one item (ErrNotFound).
	Item(ctx context.Context, runID, task string, index int) (json.RawMessage, error)

	// InsertAttempt records a new attempt and sets its ID (unique, increasing).
	InsertAttempt(ctx context.Context, a *engine.Attempt) error
	// UpdateAttempt writes every field of an attempt but Work, which never
	// changes after InsertAttempt.
	UpdateAttempt(ctx context.Context, a *engine.Attempt) error
	// Attempt returns an attempt by id (ErrNotFound).
	Attempt(ctx context.Context, id int64) (*engine.Attempt, error)
	// Attempts lists attempts by ID, ascending.
	Attempts(ctx context.Context, f AttemptFilter) ([]*engine.Attempt, error)
	// CountAttempts counts a run's attempts by task.
	CountAttempts(ctx context.Context, runID string) (map[string]int, error)
	// InstanceOutputs returns the outputs of instances 0..n-1 of a for_each
	// task: for each index the outputs of its succeeded attempt, nil where none
	// succeeded.
	InstanceOutputs(ctx context.Context, runID, task string, n int) ([]json.RawMessage, error)
	// RedoInstances returns up to limit instances of a task whose attempt with
	// the highest number ended failed, canceled or lost, in index order, with
	// that number.
	RedoInstances(ctx context.Context, runID, task string, limit int) ([]engine.Instance, error)
	// Claim marks up to c.Limit queued attempts claimed by c.Agent at c.Now and
	// returns them, oldest first. An attempt is claimable when its Executor is
	// one of c.Executors, its Labels are a subset of c.Labels and, if c.RunID is
	// set, it belongs to that run. Two transactions never claim the same attempt.
	Claim(ctx context.Context, c Claim) ([]*engine.Attempt, error)
	// Due returns up to limit pending attempts whose NotBefore is at or before
	// now, oldest first.
	Due(ctx context.Context, now time.Time, limit int) ([]*engine.Attempt, error)
	// NextDue returns the earliest NotBefore of the pending attempts, or false
	// when there is none.
	NextDue(ctx context.Context) (time.Time, bool, error)
	// CountActive counts the queued, claimed and running attempts of a pipeline
	// (pool == "") or of a pool (pipeline == "").
	CountActive(ctx context.Context, pipeline, pool string) (int, error)

	// AppendLogs records log lines of an attempt. Lines are keyed by
	// (attempt, Seq): a line whose Seq is recorded already is ignored, so a
	// batch sent twice is stored once.
	AppendLogs(ctx context.Context, attemptID int64, lines []LogLine) error
	// Logs returns up to limit lines of an attempt with Seq > after, by Seq.
	Logs(ctx context.Context, attemptID int64, after int64, limit int) ([]LogLine, error)
	// SealLogs records that an attempt's lines are now in blob storage under
	// key and deletes them from the store.
	SealLogs(ctx context.Context, seg Segment) error
	// Segment returns the sealed segment of an attempt (ErrNotFound).
	Segment(ctx context.Context, attemptID int64) (Segment, error)
	// Unsealed returns up to limit ended attempts whose log lines are still in
	// the store, oldest first.
	Unsealed(ctx context.Context, limit int) ([]int64, error)

	// PutAgent inserts or replaces an agent.
	PutAgent(ctx context.Context, a *Agent) error
	// Agent returns an agent by id (ErrNotFound).
	Agent(ctx context.Context, id string) (*Agent, error)
	// Agents lists every agent by id.
	Agents(ctx context.Context) ([]*Agent, error)

	// Notify publishes an event to Store.Listen once the transaction commits
	// (nothing if it rolls back). Events of one transaction with the same name
	// may be delivered once.
	Notify(ctx context.Context, event string) error

	// PutUser inserts or replaces a user.
	PutUser(ctx context.Context, u *User) error
	// User returns a user by name (ErrNotFound).
	User(ctx context.Context, name string) (*User, error)
	// Users lists every user by name.
	Users(ctx context.Context) ([]*User, error)
	// DeleteUser deletes a user and their sessions (ErrNotFound).
	DeleteUser(ctx context.Context, name string) error

	// PutToken inserts or replaces an API token.
	PutToken(ctx context.Context, tok *Token) error
	// Token returns a token by id (ErrNotFound).
	Token(ctx context.Context, id string) (*Token, error)
	// Tokens lists every token, oldest first (by CreatedAt, then ID).
	Tokens(ctx context.Context) ([]*Token, error)

	// PutSession inserts or replaces a login session.
	PutSession(ctx context.Context, s *Session) error
	// Session returns a session by id (ErrNotFound).
	Session(ctx context.Context, id string) (*Session, error)
	// DeleteSessions deletes the session with id (when id is set), every
	// session of user (when user is set), and every session that expired at or
	// before expired (when it is not zero). It returns how many it deleted.
	DeleteSessions(ctx context.Context, id, user string, expired time.Time) (int, error)

	// InsertAudit records an audit entry and sets its ID (unique, increasing).
	InsertAudit(ctx context.Context, e *AuditEntry) error
	// Audit lists audit entries newest first (by ID).
	Audit(ctx context.Context, f AuditFilter) ([]*AuditEntry, error)

	// PutSchedule inserts or replaces a pipeline's schedule state.
	PutSchedule(ctx context.Context, s *Schedule) error
	// Schedule returns a pipeline's schedule state (ErrNotFound).
	Schedule(ctx context.Context, pipeline string) (*Schedule, error)
	// Schedules lists every schedule state by pipeline.
	Schedules(ctx context.Context) ([]*Schedule, error)
	// MarkFired records that a pipeline's run for the logical time at was
	// created (as run runID). It returns false, and records nothing, when a run
	// for that pipeline and time was recorded already: a fire happens once
	// however many schedulers try it.
	MarkFired(ctx context.Context, pipeline string, at time.Time, runID string) (bool, error)

	// AcquireLease takes or renews the lease name for holder until now+ttl
	// when it is free, expired at or before now, or held by holder already. It
	// returns the lease as it stands after the call and whether holder holds it.
	AcquireLease(ctx context.Context, name, holder string, now time.Time, ttl time.Duration) (Lease, bool, error)
	// ReleaseLease gives up the lease name if holder holds it.
	ReleaseLease(ctx context.Context, name, holder string) error
}

// RunFilter selects runs. Zero fields select everything.
type RunFilter struct {
	Pipeline string
	States   []engine.RunState
	// Before selects runs created before this run (for paging newest first).
	Before string
	// Oldest lists oldest first instead.
	Oldest bool
	// Driven selects runs that have a Driver.
	Driven bool
	Limit  int
}

// AttemptFilter selects attempts. Zero fields select everything.
type AttemptFilter struct {
	RunID    string
	Task     string
	HasIndex bool // select only instance Index
	Index    int
	Agent    string
	States   []engine.AttemptState
	Limit    int
}

// Claim says who claims attempts and which they may take.
type Claim struct {
	Agent     string
	Labels    []string
	Executors []string
	RunID     string // only this run's attempts, when set (a local `dray run`)
	Limit     int
	Now       time.Time
}

// LogLine is one line of an attempt's log.
type LogLine struct {
	Seq    int64 // 1-based, per attempt
	Time   time.Time
	Stream string
	Text   string
}

// Segment is an attempt's log, sealed into blob storage.
type Segment struct {
	AttemptID int64
	Key       string // blob key
	Lines     int64
	Bytes     int64
}

// Agent is a process that claims and runs attempts.
type Agent struct {
	ID          string
	Host        string
	PID         int
	Labels      []string
	Executors   []string
	Version     string
	Capacity    int
	StartedAt   time.Time
	HeartbeatAt time.Time
	// State is active, draining, cordoned or stopped.
	State string
	// Token is the id of the API token that registered a remote agent
	// (empty in process).
	Token string
}

// User is a person who logs in.
type User struct {
	Name         string
	Role         string
	PasswordHash string // argon2id, in the PHC string format
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Token is an API token. Only the hash of its secret is stored.
type Token struct {
	ID         string // public part, shown in lists
	Name       string
	Role       string
	Hash       string // SHA-256 of the secret, hex
	CreatedBy  string
	CreatedAt  time.Time
	ExpiresAt  time.Time // zero: never
	LastUsedAt time.Time // zero: never used
	RevokedAt  time.Time // zero: not revoked
}

// Session is a login session; ID is the hash of the cookie's value.
type Session struct {
	ID        string
	User      string
	CSRF      string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// AuditEntry is one change someone made.
type AuditEntry struct {
	ID      int64
	Time    time.Time
	Actor   string // user name, or "token:<id>"
	Action  string // run.trigger, run.cancel, user.create, token.revoke, ...
	Target  string
	Detail  string // JSON object, or ""
	Address string // the client's address
}

// AuditFilter selects audit entries. Zero fields select everything.
type AuditFilter struct {
	Before int64 // entries with ID < Before
	Actor  string
	Limit  int
}

// Schedule is the recorded state of a pipeline's schedule.
type Schedule struct {
	Pipeline string
	// Paused is set from the API; it overrides the spec's paused when
	// PausedSet.
	Paused    bool
	PausedSet bool
	// Cursor is the instant up to which the scheduler has dealt with the fire
	// times (fired or skipped): its last tick. Zero before its first tick.
	Cursor    time.Time
	UpdatedAt time.Time
}

// Lease is a named lock held until it expires.
type Lease struct {
	Name      string
	Holder    string
	ExpiresAt time.Time
}
