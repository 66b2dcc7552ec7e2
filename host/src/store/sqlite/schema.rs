//! The database's schema: versioned migrations, counted by
//! `PRAGMA user_version` and applied in order at open.

use rusqlite::Connection;

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: tasks, with the columns recovery and listings filter on; the full
    // record is JSON (the shape the REST API shows).
    "CREATE TABLE tasks (
        id TEXT PRIMARY KEY NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        priority TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        created_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        record TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tasks_unfinished ON tasks(status) WHERE finished_ms IS NULL;
    CREATE INDEX tasks_finished ON tasks(finished_ms) WHERE finished_ms IS NOT NULL;",
    // 2: every read is served from memory and recovery reads the whole
    // table, so these indexes only cost writes.
    "DROP INDEX tasks_unfinished;
    DROP INDEX tasks_finished;",
    // 3: a change's sequence number, so a row is only ever replaced by a
    // later change (callers serialise concurrently, outside any lock).
    "ALTER TABLE tasks ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;",
    // 4: a rowid table with a unique index on the id. Rows are ~0.5-1 KiB
    // of JSON, far past the size WITHOUT ROWID tables suit (a few per page:
    // page splits on every other insert); new rows now append.
    "CREATE TABLE tasks_rowid (
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        priority TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        created_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        record TEXT NOT NULL,
        seq INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO tasks_rowid (id, kind, status, priority, idempotency_key, created_ms, finished_ms, record, seq)
        SELECT id, kind, status, priority, idempotency_key, created_ms, finished_ms, record, seq FROM tasks ORDER BY id;
    DROP TABLE tasks;
    ALTER TABLE tasks_rowid RENAME TO tasks;",
    // 5: idempotency keys unique through a partial index: most tasks have
    // none, and a NULL entry in a full index cost every insert a write to
    // one more B-tree page.
    "CREATE TABLE tasks_v5 (
        id TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        priority TEXT NOT NULL,
        idempotency_key TEXT,
        created_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        record TEXT NOT NULL,
        seq INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO tasks_v5 (id, kind, status, priority, idempotency_key, created_ms, finished_ms, record, seq)
        SELECT id, kind, status, priority, idempotency_key, created_ms, finished_ms, record, seq FROM tasks ORDER BY rowid;
    DROP TABLE tasks;
    ALTER TABLE tasks_v5 RENAME TO tasks;
    CREATE UNIQUE INDEX tasks_idempotency_key ON tasks(idempotency_key) WHERE idempotency_key IS NOT NULL;",
];

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let done = usize::try_from(version).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}
