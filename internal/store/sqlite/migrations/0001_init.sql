-- dray state, version 1. Times are unix microseconds, 0 for none.

CREATE TABLE specs (
    hash    TEXT PRIMARY KEY,
    sources TEXT NOT NULL -- JSON: path -> base64 content
);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    pipeline         TEXT NOT NULL,
    spec_hash        TEXT NOT NULL,
    state            TEXT NOT NULL,
    reason           TEXT NOT NULL,
    params           TEXT NOT NULL,
    env              TEXT NOT NULL,
    trigger          TEXT NOT NULL,
    logical_time     INTEGER NOT NULL,
    salt             TEXT NOT NULL,
    driver           TEXT NOT NULL,
    logical_date     TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL,
    unfinished       INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    ended_at         INTEGER NOT NULL
);
CREATE INDEX runs_created ON runs (created_at, id);
CREATE INDEX runs_pipeline_state ON runs (pipeline, state, created_at);
CREATE INDEX runs_driver ON runs (driver) WHERE driver <> '' AND state IN ('queued', 'running');

CREATE TABLE tasks (
    run_id     TEXT NOT NULL,
    name       TEXT NOT NULL,
    state      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    outputs    TEXT,
    items      INTEGER NOT NULL,
    next       INTEGER NOT NULL,
    active     INTEGER NOT NULL,
    succeeded  INTEGER NOT NULL,
    failed     INTEGER NOT NULL,
    redo       INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    base       INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at   INTEGER NOT NULL,
    PRIMARY KEY (run_id, name)
) WITHOUT ROWID;

CREATE TABLE items (
    run_id TEXT NOT NULL,
    task   TEXT NOT NULL,
    idx    INTEGER NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, task, idx)
) WITHOUT ROWID;

CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           TEXT NOT NULL,
    pipeline         TEXT NOT NULL,
    task             TEXT NOT NULL,
    idx              INTEGER NOT NULL,
    number           INTEGER NOT NULL,
    base             INTEGER NOT NULL,
    state            TEXT NOT NULL,
    reason           TEXT NOT NULL,
    work             TEXT NOT NULL,
    pool             TEXT NOT NULL,
    labels           TEXT NOT NULL, -- JSON array, sorted
    executor         TEXT NOT NULL,
    not_before       INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    queued_at        INTEGER NOT NULL,
    claimed_at       INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    ended_at         INTEGER NOT NULL,
    agent            TEXT NOT NULL,
    handle           BLOB,
    exit_code        INTEGER,
    outputs          TEXT,
    warnings         TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL
);
CREATE INDEX attempts_state ON attempts (state, id);
CREATE INDEX attempts_instance ON attempts (run_id, task, idx, number);
CREATE INDEX attempts_agent ON attempts (agent, state) WHERE agent <> '';
CREATE INDEX attempts_pool ON attempts (pool, state) WHERE pool <> '';
CREATE INDEX attempts_pipeline ON attempts (pipeline, state);
CREATE INDEX attempts_due ON attempts (not_before) WHERE state = 'pending';

CREATE TABLE log_lines (
    attempt_id INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    ts         INTEGER NOT NULL,
    stream     TEXT NOT NULL,
    text       TEXT NOT NULL,
    PRIMARY KEY (attempt_id, seq)
) WITHOUT ROWID;

CREATE TABLE log_segments (
    attempt_id INTEGER PRIMARY KEY,
    key        TEXT NOT NULL,
    lines      INTEGER NOT NULL,
    bytes      INTEGER NOT NULL
);

CREATE TABLE agents (
    id           TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    labels       TEXT NOT NULL,
    executors    TEXT NOT NULL,
    version      TEXT NOT NULL,
    capacity     INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    state        TEXT NOT NULL
);
