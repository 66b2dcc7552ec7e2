//! PostgreSQL backend: several daemons sharing one queue in one existing
//! database (`--store postgres://…`).
//!
//! [`PostgresStore`] holds a connection pool (deadpool over tokio-postgres)
//! and brings the schema up to date at connect ([`schema`], under an
//! advisory lock, so daemons starting together migrate once). The
//! operations the scheduler uses (claims with `FOR UPDATE SKIP LOCKED`,
//! compare-and-set outcomes, leases and their rescue) are built on this,
//! and [`local::LocalServer`] starts a throwaway server for the tests and
//! benchmarks.

mod announce;
mod batch;
mod claim;
mod leader;
mod listen;
pub mod local;
mod schema;
mod tasks;
mod tx;

use super::node::{NodeInfo, NodeInfoSource};
use super::record::TaskChange;
use super::{StoreError, TaskRecord};
use crate::store::queue::Tags;
use crate::sync::lock;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};

/// Connections a daemon keeps open by default.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long a daemon's claims and running attempts stay its own without a
/// renewal, by default: after a daemon dies, its attempts run again on
/// another daemon within this (plus a rescue round, 5 s).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How a daemon uses its PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Connections kept open at most.
    pub pool_size: usize,
    /// How long a claim or a running attempt stays this daemon's without a
    /// renewal (renewed every third of it).
    pub lease: Duration,
    /// How often every pool is woken without a notification.
    pub poll_every: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            pool_size: DEFAULT_POOL_SIZE,
            lease: DEFAULT_LEASE,
            poll_every: listen::POLL_EVERY,
        }
    }
}

/// How long connecting, waiting for a pooled connection, or an
/// unacknowledged write to the server may take before it is an error.
const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a database error keeps the store reported as degraded.
const DEGRADED_FOR: Duration = Duration::from_secs(10);

/// Task changes a slow live view may fall behind by before it skips some.
const CHANGES_BUFFERED: usize = 4096;

/// The task store in a PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// The URL without its password, for messages and `/api/v1/nodes`.
    url: String,
    /// The schema version the database is at.
    version: usize,
    /// This daemon's name in the database: who holds a claim or a running
    /// attempt. Stable across restarts of one daemon (kept in its data
    /// directory), so a restarted daemon takes back its own claims at once.
    node: String,
    /// How long a claim or a running attempt stays this node's without a
    /// renewal, seconds.
    lease_s: f64,
    local: Arc<Local>,
}

/// What this node keeps for itself: wake-ups, live views, the claim
/// policy's state, give-backs not yet written, the last error.
#[derive(Debug)]
struct Local {
    changes: broadcast::Sender<TaskChange>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    due_changed: Arc<Notify>,
    tags: Mutex<HashMap<String, PoolTags>>,
    giving_back: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The tasks this daemon holds (claimed, or running their attempt):
    /// the leases it renews, each with the number of the hold that last
    /// took it (a renewal that read the set before a task was taken again
    /// says nothing about the new hold).
    held: Mutex<HashMap<uuid::Uuid, u64>>,
    /// The number of the next hold.
    holds: std::sync::atomic::AtomicU64,
    degraded: Mutex<Option<(Instant, String)>>,
    /// Whether the `LISTEN` connection is up (other daemons' changes are
    /// heard at once, not at the next poll).
    listening: tokio::sync::watch::Sender<bool>,
    /// Other daemons' events.
    remote: broadcast::Sender<super::RemoteEvent>,
    /// What this daemon's heartbeat says of it.
    node_info: Mutex<Option<NodeInfoSource>>,
    /// Notifications to send once their changes have committed.
    outbox: Mutex<announce::Outbox>,
    outbox_filled: Arc<Notify>,
    /// Whether this daemon leads the periodic work ([`leader`]).
    leader: tokio::sync::watch::Sender<bool>,
    /// Signalled when the leader resigned.
    leader_vacant: Arc<Notify>,
    /// Transitions waiting for the writer ([`batch`]).
    batch: Mutex<Vec<batch::Pending>>,
    batch_filled: Arc<Notify>,
    /// New tasks waiting for the writer ([`batch`]).
    inserts: Mutex<Vec<batch::PendingInsert>>,
    inserts_filled: Arc<Notify>,
    /// Tasks as their claim read them, until a worker takes them.
    prefetched: Mutex<HashMap<uuid::Uuid, TaskRecord>>,
}

/// One pool's claim policy on this node: the levels' tags, and which
/// levels had work at the last claim.
#[derive(Debug, Default)]
struct PoolTags {
    tags: Tags,
    active: [bool; 5],
}

impl Local {
    /// Logs a database error and reports the store degraded for a while.
    fn note_error(&self, e: &StoreError) {
        tracing::error!("task store: {e}");
        *lock(&self.degraded) = Some((Instant::now(), e.to_string()));
    }

    fn waker(&self, pool: &str) -> Arc<Notify> {
        lock(&self.wakers)
            .entry(pool.to_string())
            .or_default()
            .clone()
    }

    fn with_tags<R>(&self, pool: &str, f: impl FnOnce(&mut PoolTags) -> R) -> R {
        f(lock(&self.tags).entry(pool.to_string()).or_default())
    }

    fn hold(&self, ids: &[uuid::Uuid]) {
        let mut held = lock(&self.held);
        for id in ids {
            let n = self
                .holds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            held.insert(*id, n);
        }
    }

    fn release(&self, id: uuid::Uuid) {
        lock(&self.held).remove(&id);
        lock(&self.prefetched).remove(&id);
    }

    fn giving_back(&self, write: tokio::task::JoinHandle<()>) {
        let mut pending = lock(&self.giving_back);
        pending.retain(|w| !w.is_finished());
        pending.push(write);
    }

    /// Waits for the give-backs sent so far, so this node's next claim
    /// sees them.
    async fn given_back(&self) {
        let pending = std::mem::take(&mut *lock(&self.giving_back));
        for write in pending {
            let _ = write.await;
        }
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .field("version", &self.version)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` as node `node`, migrates the schema, and gives
    /// back the claims an earlier run of this node left on queued tasks.
    pub async fn connect(
        url: &str,
        node: &str,
        options: &PostgresOptions,
    ) -> Result<PostgresStore, StoreError> {
        let pool_size = options.pool_size;
        let shown = redact(url);
        let fail = |message: String| StoreError::Connect {
            url: shown.clone(),
            message,
        };
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| fail(format!("the URL is not a PostgreSQL connection URL ({e})")))?;
        // A database that went away (stopped, host gone, network cut) is an
        // error within seconds, never a wait without end: a submission then
        // answers 503 and an outcome waits to be written (see `scheduler`).
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(NETWORK_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(NETWORK_TIMEOUT);
        }
        config.keepalives(true);
        config.keepalives_idle(NETWORK_TIMEOUT);
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(NETWORK_TIMEOUT))
            .create_timeout(Some(NETWORK_TIMEOUT))
            .recycle_timeout(Some(NETWORK_TIMEOUT))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut client = pool.get().await.map_err(|e| fail(describe_pool(&e)))?;
        let version = schema::migrate(&mut client)
            .await
            .map_err(|e| fail(format!("migrating the schema failed: {}", describe(&e))))?;
        client
            .execute(
                "UPDATE wasmhive_tasks SET claimed_by = NULL, lease_until = NULL
                 WHERE claimed_by = $1 AND status = 'queued'",
                &[&node],
            )
            .await
            .map_err(|e| fail(describe(&e)))?;
        let local = Arc::new(Local {
            changes: broadcast::channel(CHANGES_BUFFERED).0,
            wakers: Mutex::default(),
            due_changed: Arc::default(),
            tags: Mutex::default(),
            giving_back: Mutex::default(),
            held: Mutex::default(),
            holds: std::sync::atomic::AtomicU64::new(0),
            degraded: Mutex::default(),
            listening: tokio::sync::watch::channel(false).0,
            remote: broadcast::channel(CHANGES_BUFFERED).0,
            node_info: Mutex::default(),
            outbox: Mutex::default(),
            outbox_filled: Arc::default(),
            leader: tokio::sync::watch::channel(false).0,
            leader_vacant: Arc::default(),
            batch: Mutex::default(),
            batch_filled: Arc::default(),
            inserts: Mutex::default(),
            inserts_filled: Arc::default(),
            prefetched: Mutex::default(),
        });
        let lease_s = options.lease.as_secs_f64().max(0.001);
        tokio::spawn(batch::write(
            pool.clone(),
            Arc::downgrade(&local),
            node.to_string(),
            lease_s,
        ));
        tokio::spawn(batch::write_inserts(
            pool.clone(),
            Arc::downgrade(&local),
            node.to_string(),
        ));
        tokio::spawn(leader::elect(
            pool.clone(),
            Arc::downgrade(&local),
            node.to_string(),
            options.lease,
        ));
        tokio::spawn(announce::send(pool.clone(), Arc::downgrade(&local)));
        tokio::spawn(listen::listen(
            config,
            Arc::downgrade(&local),
            node.to_string(),
            options.poll_every,
        ));
        tokio::spawn(renew_leases(
            pool.clone(),
            Arc::downgrade(&local),
            node.to_string(),
            options.lease,
        ));
        Ok(PostgresStore {
            pool,
            url: shown,
            version,
            node: node.to_string(),
            lease_s,
            local,
        })
    }

    /// This daemon's name in the database.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// What this daemon's heartbeat says of it from now on; the first
    /// heartbeat goes out at once.
    pub fn describe_node(&self, source: NodeInfoSource) {
        *lock(&self.local.node_info) = Some(source.clone());
        let pool = self.pool.clone();
        let local = Arc::downgrade(&self.local);
        tokio::spawn(async move { heartbeat(&pool, &local, &source).await });
    }

    /// The daemons that sent a heartbeat within three leases, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let found = async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT id, address, started_at, heartbeat_at, pools, plugins, workers FROM wasmhive_nodes
                     WHERE heartbeat_at > now() - make_interval(secs => $1) ORDER BY id",
                    &[&(3.0 * self.lease_s)],
                )
                .await
                .map_err(|e| StoreError::Unavailable(describe(&e)))?;
            Ok(rows
                .iter()
                .map(|r| {
                    let heartbeat: std::time::SystemTime = r.get(3);
                    let tokio_postgres::types::Json(pools) = r.get(4);
                    let tokio_postgres::types::Json(plugins) = r.get(5);
                    let tokio_postgres::types::Json(running) = r.get(6);
                    NodeInfo {
                        id: r.get(0),
                        address: r.get(1),
                        started_at: r.get(2),
                        last_heartbeat: humantime::format_rfc3339_millis(heartbeat).to_string(),
                        pools,
                        plugins,
                        running,
                    }
                })
                .collect())
        }
        .await;
        self.noted(found)
    }

    /// Other daemons' events (finished tasks, cancel requests).
    pub fn remote_events(&self) -> broadcast::Receiver<super::RemoteEvent> {
        self.local.remote.subscribe()
    }

    /// Asks every daemon to stop the attempt of task `id` if it runs it.
    pub async fn request_cancel(&self, id: uuid::Uuid) -> Result<(), StoreError> {
        let client = self.client().await?;
        let sent = client
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&listen::CANCEL_CHANNEL, &id.to_string()],
            )
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Unavailable(describe(&e)));
        self.noted(sent)
    }

    /// Whether this daemon leads the periodic work, and its changes.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        self.local.leader.subscribe()
    }

    /// The daemon that leads the periodic work now, if one does.
    pub async fn leader(&self) -> Result<Option<String>, StoreError> {
        let found = leader::current(&self.pool).await;
        self.noted(found)
    }

    /// Gives up the leadership (the daemon stops), so another daemon
    /// takes it at once.
    pub async fn resign(&self) {
        self.local.leader.send_replace(false);
        if let Err(e) = leader::resign(&self.pool, &self.node).await {
            tracing::warn!("could not hand the leadership over: {e}");
        }
    }

    /// Returns once other daemons' changes are heard (the `LISTEN`
    /// connection is up).
    pub async fn until_listening(&self) {
        let mut listening = self.local.listening.subscribe();
        let _ = listening.wait_for(|up| *up).await;
    }

    async fn client(&self) -> Result<Object, StoreError> {
        pooled(&self.pool).await
    }

    /// Passes `result` on, remembering an error for [`Self::degraded`].
    fn noted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            self.local.note_error(e);
        }
        result
    }

    /// The last database error, if one happened within [`DEGRADED_FOR`].
    pub fn degraded(&self) -> Option<String> {
        let last = lock(&self.local.degraded).clone()?;
        (last.0.elapsed() < DEGRADED_FOR).then_some(last.1)
    }

    fn announce(&self, record: &TaskRecord) {
        if self.local.changes.receiver_count() > 0 {
            let _ = self.local.changes.send(TaskChange::from(record));
        }
    }

    /// This node's task changes, for live views.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskChange> {
        self.local.changes.subscribe()
    }

    /// Notified when a task of `pool` may be claimed.
    pub fn ready_waker(&self, pool: &str) -> Arc<Notify> {
        self.local.waker(pool)
    }

    /// Notified when a retry is filed.
    pub fn due_changed(&self) -> Arc<Notify> {
        self.local.due_changed.clone()
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> usize {
        self.version
    }

    /// Whether the database answers now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(describe_pool(&e)))?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| StoreError::Unavailable(describe(&e)))?;
        Ok(())
    }
}

/// Keeps this daemon's claims and running attempts leased, until the store
/// is dropped, renewing every third of the lease (two renewals may fail
/// before it runs out). A daemon that stops renewing (killed, cut off)
/// loses them when the lease runs out, and another daemon rescues them.
async fn renew_leases(pool: Pool, local: std::sync::Weak<Local>, node: String, lease: Duration) {
    let lease_s = lease.as_secs_f64().max(0.001);
    let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(local) = local.upgrade() else {
            return;
        };
        let snapshot: Vec<(uuid::Uuid, u64)> =
            lock(&local.held).iter().map(|(id, n)| (*id, *n)).collect();
        let held: Vec<uuid::Uuid> = snapshot.iter().map(|(id, _)| *id).collect();
        let renewed = async {
            let client = pooled(&pool).await?;
            client
                .query(
                    "UPDATE wasmhive_tasks SET lease_until = now() + make_interval(secs => $2)
                     WHERE id = ANY($3) AND claimed_by = $1 AND status IN ('queued', 'running')
                     RETURNING id",
                    &[&node, &lease_s, &held],
                )
                .await
                .map_err(|e| StoreError::Unavailable(describe(&e)))
        }
        .await;
        match renewed {
            Ok(rows) => {
                // What this daemon held but no longer does (cancelled, or
                // rescued by another daemon after a lease ran out): an
                // attempt still running here is stopped, in case the
                // notification that said so was lost. A task taken again
                // since the snapshot (claimed anew after a rescue) is a new
                // hold, which the next renewal judges.
                let kept: std::collections::HashSet<uuid::Uuid> =
                    rows.iter().map(|r| r.get(0)).collect();
                let lost = lost_holds(&mut lock(&local.held), &snapshot, &kept);
                for id in lost {
                    let _ = local.remote.send(super::RemoteEvent::LeaseLost(id));
                }
            }
            Err(e) => {
                tracing::warn!("could not renew this daemon's leases: {e}");
                *lock(&local.degraded) = Some((Instant::now(), e.to_string()));
            }
        }
        let source = lock(&local.node_info).clone();
        if let Some(source) = source {
            heartbeat(&pool, &Arc::downgrade(&local), &source).await;
        }
    }
}

/// The holds of `snapshot` a renewal did not keep and that nothing took
/// again since: they are taken out of `held`, and returned.
fn lost_holds(
    held: &mut HashMap<uuid::Uuid, u64>,
    snapshot: &[(uuid::Uuid, u64)],
    kept: &std::collections::HashSet<uuid::Uuid>,
) -> Vec<uuid::Uuid> {
    let mut lost = Vec::new();
    for (id, n) in snapshot.iter().filter(|(id, _)| !kept.contains(id)) {
        if held.get(id) == Some(n) {
            held.remove(id);
            lost.push(*id);
        }
    }
    lost
}

/// A connection from `pool`, or why there is none.
async fn pooled(pool: &Pool) -> Result<Object, StoreError> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(describe_pool(&e)))
}

/// Writes this daemon's row of `wasmhive_nodes`, as it is now.
async fn heartbeat(pool: &Pool, local: &std::sync::Weak<Local>, source: &NodeInfoSource) {
    let info = source.now();
    let written = async {
        let client = pooled(pool).await?;
        client
            .execute(
                "INSERT INTO wasmhive_nodes (id, address, started_at, heartbeat_at, pools, plugins, workers)
                 VALUES ($1, $2, $3, now(), $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET address = excluded.address,
                     started_at = excluded.started_at, heartbeat_at = now(),
                     pools = excluded.pools, plugins = excluded.plugins, workers = excluded.workers",
                &[
                    &info.id,
                    &info.address,
                    &info.started_at,
                    &tokio_postgres::types::Json(&info.pools),
                    &tokio_postgres::types::Json(&info.plugins),
                    &tokio_postgres::types::Json(&info.running),
                ],
            )
            .await
            .map_err(|e| StoreError::Unavailable(describe(&e)))
    }
    .await;
    if let (Err(e), Some(local)) = (written, local.upgrade()) {
        tracing::warn!("could not send this daemon's heartbeat: {e}");
        *lock(&local.degraded) = Some((Instant::now(), e.to_string()));
    }
}

/// This daemon's node name, kept in `<data>/node-id` so that it survives a
/// restart: `<host name>-<8 hex digits>`, made on first start.
pub fn node_name(data: &std::path::Path) -> Result<String, StoreError> {
    let path = data.join("node-id");
    let open_error = |e: std::io::Error| StoreError::Open {
        path: path.clone(),
        message: e.to_string(),
    };
    match std::fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => return Ok(name.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(open_error(e)),
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wasmhive".to_string());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("{host}-{}", &suffix[..8]);
    std::fs::create_dir_all(data).map_err(open_error)?;
    let tmp = data.join(".node-id.tmp");
    std::fs::write(&tmp, format!("{name}\n")).map_err(open_error)?;
    std::fs::rename(&tmp, &path).map_err(open_error)?;
    Ok(name)
}

/// `postgres://user:secret@host/db` → `postgres://user@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    let user = credentials.split(':').next().unwrap_or_default();
    format!("{scheme}://{user}@{host}")
}

/// A database error as a sentence: the server's own message when it sent one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => {
            format!("the database cannot be reached: {}", describe(e))
        }
        other => format!("the database cannot be reached: {other}"),
    }
}

#[cfg(test)]
mod tests;
