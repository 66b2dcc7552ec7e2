//! The PostgreSQL schema: versioned migrations, recorded in
//! `wasmhive_schema`, applied in order under an advisory lock so that
//! several daemons starting at once migrate once.

use tokio_postgres::Client;

/// Held (per transaction) while migrating; any constant unique to wasmhive.
const MIGRATION_LOCK: i64 = 0x7761_736d_6869_7665; // "wasmhive"

/// Schema migrations, applied in order; version N is `MIGRATIONS[N - 1]`.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: tasks. The record (the task as the REST API shows it) is JSONB;
    // the columns beside it are what claims, compare-and-set outcomes,
    // due retries, lease rescue and retention query. Ids are UUIDv7, so
    // ordering by id within a priority is first-in first-out.
    "CREATE TABLE wasmhive_tasks (
        id uuid PRIMARY KEY,
        kind text NOT NULL,
        pool text NOT NULL,
        status text NOT NULL,
        priority smallint NOT NULL,
        attempt integer NOT NULL DEFAULT 0,
        idempotency_key text,
        parent_id uuid,
        created_at timestamptz NOT NULL,
        due_at timestamptz,
        finished_at timestamptz,
        claimed_by text,
        lease_until timestamptz,
        parked boolean NOT NULL DEFAULT false,
        record jsonb NOT NULL
    );
    CREATE UNIQUE INDEX wasmhive_tasks_idempotency_key
        ON wasmhive_tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE INDEX wasmhive_tasks_queued
        ON wasmhive_tasks (pool, priority, id) WHERE status = 'queued' AND NOT parked;
    CREATE INDEX wasmhive_tasks_due
        ON wasmhive_tasks (due_at) WHERE status = 'retry_wait';
    CREATE INDEX wasmhive_tasks_leases
        ON wasmhive_tasks (lease_until) WHERE status = 'running';
    CREATE INDEX wasmhive_tasks_finished
        ON wasmhive_tasks (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX wasmhive_tasks_parent
        ON wasmhive_tasks (parent_id) WHERE parent_id IS NOT NULL;",
    // 2: the daemons sharing the queue, each row kept by its daemon's
    // heartbeat (`GET /api/v1/nodes`).
    "CREATE TABLE wasmhive_nodes (
        id text PRIMARY KEY,
        address text NOT NULL,
        started_at text NOT NULL,
        heartbeat_at timestamptz NOT NULL,
        pools jsonb NOT NULL,
        plugins jsonb NOT NULL
    );",
    // 3: the leader of the periodic work (due retries, rescue, retention),
    // held by its daemon's renewals (see `leader`); the tasks each daemon's
    // workers run, as of its heartbeat.
    "CREATE TABLE wasmhive_leader (
        name text PRIMARY KEY,
        node text NOT NULL,
        elected_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL
    );
    ALTER TABLE wasmhive_nodes ADD COLUMN workers jsonb NOT NULL DEFAULT '{}';",
    // 4: claims, give-backs and lease renewals change no indexed column, so
    // PostgreSQL updates those rows in place (HOT: no new index entries, no
    // dead ones for the next claim to skip): the running attempts are
    // indexed by id, not by lease (rescue reads the few there are), and
    // pages keep room for the new row versions.
    "DROP INDEX wasmhive_tasks_leases;
    CREATE INDEX wasmhive_tasks_running ON wasmhive_tasks (id) WHERE status = 'running';
    ALTER TABLE wasmhive_tasks SET (fillfactor = 70);",
];

/// Applies the migrations this database has not had; returns the schema
/// version it is at now. A database migrated by a newer wasmhive is
/// refused rather than written with an older idea of the schema.
pub(super) async fn migrate(client: &mut Client) -> Result<usize, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS wasmhive_schema (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::integer FROM wasmhive_schema",
            &[],
        )
        .await?;
    let done = usize::try_from(row.get::<_, i32>(0)).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.batch_execute(sql).await?;
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO wasmhive_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(done.max(MIGRATIONS.len()))
}
