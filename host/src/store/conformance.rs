//! One conformance suite for every [`Store`] backend: each test states a
//! contract of the store's operations and runs against the memory, the
//! SQLite and the PostgreSQL backend alike (a new backend adds one line to the macro at the
//! bottom). Contracts about what survives a restart (reopen, recovery after
//! an unclean stop) run on the durable backends.

use super::postgres::local::LocalServer;
use super::postgres::{PostgresOptions, PostgresStore};
use super::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use super::{Inserted, Store, TaskFilter, TaskRecord, Transition, TransitionError};
use crate::task::{FailureKind, Priority, TaskFailure, TaskStatus};
use std::path::Path;
use std::time::{Duration, SystemTime};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A backend under test, opened on a directory (the same directory again
/// is a restart). PostgreSQL runs a server of its own for each test, and
/// the directory names the node, as a daemon's data directory does.
pub enum Backend {
    Memory,
    Sqlite,
    Postgres(LocalServer),
}

impl Backend {
    pub async fn open(&self, dir: &Path) -> Result<Store, Box<dyn std::error::Error>> {
        Ok(match self {
            Backend::Memory => Store::memory(),
            Backend::Sqlite => {
                let options = SqliteOptions {
                    synchronous: Synchronous::Normal,
                    max_size_mb: 0,
                };
                Store::Sqlite(SqliteStore::open(&dir.join("tasks.db"), &options)?)
            }
            Backend::Postgres(server) => {
                let node = dir.display().to_string();
                let options = PostgresOptions {
                    pool_size: 4,
                    ..PostgresOptions::default()
                };
                Store::Postgres(PostgresStore::connect(&server.url(), &node, &options).await?)
            }
        })
    }
}

fn memory() -> Result<Backend, Box<dyn std::error::Error>> {
    Ok(Backend::Memory)
}

fn sqlite() -> Result<Backend, Box<dyn std::error::Error>> {
    Ok(Backend::Sqlite)
}

fn postgres() -> Result<Backend, Box<dyn std::error::Error>> {
    Ok(Backend::Postgres(LocalServer::start(&["fsync=off"])?))
}

/// The kinds the tests' tasks have, as a daemon that loaded them claims.
pub fn every_kind() -> Vec<String> {
    ["echo", "crawl", "scrape"].map(String::from).to_vec()
}

fn task(kind: &str, key: Option<&str>) -> TaskRecord {
    TaskRecord {
        category: Some("batch".into()),
        max_retries: 3,
        timeout_s: 30,
        idempotency_key: key.map(str::to_string),
        ..TaskRecord::new(
            kind,
            serde_json::json!({ "n": 1 }),
            Priority::Normal,
            SystemTime::now(),
        )
    }
}

fn start(attempt: u32) -> Transition {
    Transition::Start {
        attempt,
        plugin: super::AttemptPlugin {
            name: "echo".into(),
            version: "1.0.0".into(),
        },
        category: "batch".into(),
        at: SystemTime::now(),
    }
}

fn log(attempt: u32) -> super::AttemptRecord {
    super::AttemptRecord {
        attempt,
        plugin: super::AttemptPlugin {
            name: "echo".into(),
            version: "1.0.0".into(),
        },
        started_at: SystemTime::now(),
        duration_ms: 1,
        error: None,
        charged: true,
    }
}

fn succeed(attempt: u32) -> Transition {
    Transition::Succeed {
        log: log(attempt),
        result: serde_json::json!({ "attempt": attempt }),
        at: SystemTime::now(),
    }
}

async fn insert(
    store: &Store,
    record: TaskRecord,
) -> Result<TaskRecord, Box<dyn std::error::Error>> {
    match store.insert(record).await? {
        Inserted::New(t) => Ok(t),
        Inserted::Existing(t) => Err(format!("{} already existed", t.task_id).into()),
    }
}

pub async fn an_inserted_task_reads_back_as_it_was_given(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = b.open(dir.path()).await?;
    let given = task("echo", None);
    let stored = insert(&store, given.clone()).await?;
    assert_eq!(stored.task_id, given.task_id);
    let back = store.get(given.task_id).await.ok_or("lost")?;
    assert_eq!(serde_json::to_value(&back)?, serde_json::to_value(&given)?);
    Ok(())
}

pub async fn an_idempotency_key_gives_back_the_first_task(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = b.open(dir.path()).await?;
    let first = insert(&store, task("echo", Some("order-7"))).await?;
    let Inserted::Existing(again) = store.insert(task("echo", Some("order-7"))).await? else {
        return Err("a second task with the same key was inserted".into());
    };
    assert_eq!(again.task_id, first.task_id);
    assert_eq!(store.list(&filter(None)).await.len(), 1);
    Ok(())
}

pub async fn idempotency_keys_hold_across_a_restart(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let first = {
        let store = b.open(dir.path()).await?;
        let first = insert(&store, task("echo", Some("k"))).await?;
        store.sync().await?;
        first
    };
    let store = b.open(dir.path()).await?;
    let Inserted::Existing(again) = store.insert(task("echo", Some("k"))).await? else {
        return Err("the key was forgotten across the restart".into());
    };
    assert_eq!(again.task_id, first.task_id);
    Ok(())
}

pub async fn transitions_follow_the_lifecycle_and_refusals_write_nothing(
    b: &Backend,
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = b.open(dir.path()).await?;
    let t = insert(&store, task("echo", None)).await?;
    let id = t.task_id;
    // Not running: an outcome is refused and nothing changes.
    assert!(matches!(
        store.transition(id, succeed(1)).await,
        Err(TransitionError::Illegal { from: "queued", .. })
    ));
    assert_eq!(
        store.get(id).await.map(|t| t.status),
        Some(TaskStatus::Queued)
    );
    store.transition(id, start(1)).await?;
    // A stale attempt's outcome is refused; the current one's is applied.
    assert!(matches!(
        store.transition(id, succeed(2)).await,
        Err(TransitionError::Stale {
            attempt: 2,
            current: 1
        })
    ));
    store.transition(id, succeed(1)).await?;
    assert_eq!(
        store.get(id).await.map(|t| t.status),
        Some(TaskStatus::Succeeded)
    );
    // A duplicate outcome is refused.
    assert!(store.transition(id, succeed(1)).await.is_err());
    assert!(matches!(
        store.transition(uuid::Uuid::now_v7(), start(1)).await,
        Err(TransitionError::NotFound(_))
    ));
    Ok(())
}

pub async fn concurrent_starts_of_one_attempt_have_one_winner(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = b.open(dir.path()).await?;
    let id = insert(&store, task("echo", None)).await?.task_id;
    let mut racers = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            store.transition(id, start(1)).await.is_ok()
        }));
    }
    let mut winners = 0;
    for r in racers {
        winners += usize::from(r.await?);
    }
    assert_eq!(winners, 1);
    assert_eq!(store.get(id).await.map(|t| t.attempts), Some(1));
    Ok(())
}

pub async fn the_last_change_of_every_task_survives_a_restart(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let (done, waiting) = {
        let store = b.open(dir.path()).await?;
        let done = insert(&store, task("echo", None)).await?.task_id;
        store.transition(done, start(1)).await?;
        store.transition(done, succeed(1)).await?;
        let waiting = insert(&store, task("echo", None)).await?.task_id;
        store.transition(waiting, start(1)).await?;
        store
            .transition(
                waiting,
                Transition::Retry {
                    log: log(1),
                    failure: TaskFailure::new(FailureKind::Retryable, "later"),
                    due: SystemTime::now() + Duration::from_secs(60),
                },
            )
            .await?;
        store.sync().await?;
        (done, waiting)
    };
    let store = b.open(dir.path()).await?;
    let done = store.get(done).await.ok_or("finished task lost")?;
    assert_eq!((done.status, done.attempts), (TaskStatus::Succeeded, 1));
    assert_eq!(done.result, Some(serde_json::json!({ "attempt": 1 })));
    let waiting = store.get(waiting).await.ok_or("waiting task lost")?;
    assert_eq!(waiting.status, TaskStatus::RetryWait);
    assert!(waiting.next_attempt_at.is_some());
    Ok(())
}

pub async fn a_running_attempt_is_found_after_an_unclean_stop(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let id = {
        let store = b.open(dir.path()).await?;
        let id = insert(&store, task("echo", None)).await?.task_id;
        store.transition(id, start(1)).await?;
        // No sync: the process dies with the start handed to the writer.
        store.durable(store.mark()).await;
        id
    };
    let store = b.open(dir.path()).await?;
    let unfinished = store.unfinished().await;
    let found = unfinished
        .iter()
        .find(|t| t.task_id == id)
        .ok_or("the running task was not found unfinished")?;
    assert_eq!((found.status, found.attempts), (TaskStatus::Running, 1));
    Ok(())
}

pub async fn prune_deletes_only_what_finished_before_the_cutoff(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = b.open(dir.path()).await?;
    let old = insert(&store, task("echo", None)).await?.task_id;
    store.transition(old, start(1)).await?;
    store.transition(old, succeed(1)).await?;
    let cutoff = SystemTime::now() + Duration::from_millis(1);
    let queued = insert(&store, task("echo", None)).await?.task_id;
    assert_eq!(store.prune(cutoff).await?, 1);
    assert!(store.get(old).await.is_none());
    assert!(store.get(queued).await.is_some());
    assert_eq!(store.prune(cutoff).await?, 0);
    Ok(())
}

fn filter(status: Option<TaskStatus>) -> TaskFilter {
    TaskFilter {
        status,
        kind: None,
        limit: usize::MAX,
    }
}

pub async fn listings_filter_by_status_and_kind_newest_first(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = b.open(dir.path()).await?;
    let mut ids = Vec::new();
    for kind in ["echo", "scrape", "echo"] {
        ids.push(insert(&store, task(kind, None)).await?.task_id);
    }
    store.transition(ids[0], start(1)).await?;
    let echoes: Vec<_> = store
        .list(&TaskFilter {
            kind: Some("echo".into()),
            ..filter(None)
        })
        .await
        .iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(echoes, [ids[2], ids[0]]);
    let running: Vec<_> = store
        .list(&filter(Some(TaskStatus::Running)))
        .await
        .iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(running, [ids[0]]);
    let one = store
        .list(&TaskFilter {
            limit: 1,
            ..filter(None)
        })
        .await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].task_id, ids[2]);
    Ok(())
}

/// A time a database keeps exactly (PostgreSQL keeps microseconds).
fn whole_second(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn prioritised(priority: Priority) -> TaskRecord {
    TaskRecord {
        priority,
        ..task("echo", None)
    }
}

fn ids(jobs: &[super::queue::Job]) -> Vec<uuid::Uuid> {
    jobs.iter().map(|j| j.task_id).collect()
}

pub async fn claims_come_most_urgent_first_and_hold_back_background_work(
    b: &Backend,
) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = b.open(dir.path()).await?;
    let bulk = insert(&store, prioritised(Priority::Bulk)).await?.task_id;
    let normal = insert(&store, prioritised(Priority::Normal)).await?.task_id;
    let critical = insert(&store, prioritised(Priority::Critical))
        .await?
        .task_id;
    assert_eq!(store.depths("batch").await, [1, 0, 1, 0, 1]);
    assert!(
        store
            .claim("scrape", 10, true, &every_kind())
            .await
            .is_empty(),
        "another pool's queue"
    );
    assert_eq!(
        ids(&store.claim("batch", 10, false, &every_kind()).await),
        [critical, normal]
    );
    assert!(
        store
            .claim("batch", 10, false, &every_kind())
            .await
            .is_empty(),
        "BULK held back"
    );
    assert_eq!(
        ids(&store.claim("batch", 10, true, &every_kind()).await),
        [bulk]
    );
    assert_eq!(store.depths("batch").await, [0; 5]);
    Ok(())
}

pub async fn concurrent_claimers_never_get_the_same_task(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = b.open(dir.path()).await?;
    let mut all = std::collections::HashSet::new();
    for _ in 0..300 {
        all.insert(insert(&store, task("echo", None)).await?.task_id);
    }
    let mut claimers = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let jobs = store.claim("batch", 3, true, &every_kind()).await;
                if jobs.is_empty() {
                    return mine;
                }
                mine.extend(ids(&jobs));
            }
        }));
    }
    let mut claimed = Vec::new();
    for c in claimers {
        claimed.extend(c.await?);
    }
    let unique: std::collections::HashSet<_> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 300, "each task claimed once");
    assert_eq!(unique, all);
    Ok(())
}

pub async fn the_queue_follows_each_tasks_state(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = b.open(dir.path()).await?;
    let id = insert(&store, task("echo", None)).await?.task_id;
    async fn claim(store: &Store) -> Vec<uuid::Uuid> {
        ids(&store.claim("batch", 10, true, &every_kind()).await)
    }
    assert_eq!(claim(&store).await, [id]);
    store.unclaim(id);
    assert_eq!(claim(&store).await, [id], "given back");
    store.transition(id, start(1)).await?;
    store.unclaim(id);
    assert!(claim(&store).await.is_empty(), "running is not queued");
    let due = whole_second(SystemTime::now() + Duration::from_secs(60));
    store
        .transition(
            id,
            Transition::Retry {
                log: log(1),
                failure: TaskFailure::new(FailureKind::Retryable, "later"),
                due,
            },
        )
        .await?;
    assert!(claim(&store).await.is_empty(), "waiting is not queued");
    assert_eq!(store.waiting().await.get("batch"), Some(&1));
    assert_eq!(
        store.due(due - Duration::from_secs(1)).await,
        (vec![], Some(due))
    );
    assert_eq!(store.due(due).await.0, [id]);
    store.transition(id, Transition::Due).await?;
    assert!(store.due(due).await.0.is_empty());
    assert!(store.waiting().await.is_empty());
    assert_eq!(claim(&store).await, [id], "due again");
    let park = Transition::Park {
        breaker: "plugin:echo@1.0.0".into(),
    };
    store.transition(id, park).await?;
    store.unclaim(id);
    assert!(claim(&store).await.is_empty(), "parked is not claimable");
    store
        .transition(id, Transition::Unpark { breaker: None })
        .await?;
    let cancel = Transition::Cancel {
        at: SystemTime::now(),
        message: "no longer wanted".into(),
    };
    store.transition(id, cancel).await?;
    assert!(claim(&store).await.is_empty(), "cancelled");
    assert_eq!(store.depths("batch").await, [0; 5]);
    Ok(())
}

pub async fn the_queue_is_rebuilt_from_the_tasks_after_a_restart(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let due = SystemTime::now() + Duration::from_secs(60);
    let (queued, claimed, waiting) = {
        let store = b.open(dir.path()).await?;
        let queued = insert(&store, task("echo", None)).await?.task_id;
        let claimed = insert(&store, task("echo", None)).await?.task_id;
        let waiting = insert(&store, task("echo", None)).await?.task_id;
        assert_eq!(store.claim("batch", 1, true, &every_kind()).await.len(), 1);
        store.claim("batch", 2, true, &every_kind()).await;
        store.transition(waiting, start(1)).await?;
        let retry = Transition::Retry {
            log: log(1),
            failure: TaskFailure::new(FailureKind::Retryable, "later"),
            due,
        };
        store.transition(waiting, retry).await?;
        store.sync().await?;
        (queued, claimed, waiting)
    };
    let store = b.open(dir.path()).await?;
    let mut back = ids(&store.claim("batch", 10, true, &every_kind()).await);
    back.sort();
    assert_eq!(
        back,
        [queued, claimed],
        "a claim does not outlive the daemon"
    );
    assert_eq!(store.due(due).await.0, [waiting]);
    Ok(())
}

pub async fn a_child_is_linked_to_its_parent_by_its_insert(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = b.open(dir.path()).await?;
    let parent = insert(&store, task("crawl", None)).await?.task_id;
    let child = TaskRecord {
        parent_id: Some(parent),
        root_id: Some(parent),
        depth: 1,
        ..task("scrape", Some("child:1"))
    };
    let child = insert(&store, child).await?.task_id;
    assert_eq!(
        store.get(parent).await.ok_or("parent lost")?.children,
        [child]
    );
    // The same child again is the existing one, not a second link.
    let again = TaskRecord {
        parent_id: Some(parent),
        ..task("scrape", Some("child:1"))
    };
    assert!(matches!(store.insert(again).await?, Inserted::Existing(_)));
    assert_eq!(
        store.get(parent).await.ok_or("parent lost")?.children,
        [child]
    );
    Ok(())
}

pub async fn a_child_and_its_link_are_durable_together(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let (parent, child) = {
        let store = b.open(dir.path()).await?;
        let parent = insert(&store, task("crawl", None)).await?.task_id;
        let child = TaskRecord {
            parent_id: Some(parent),
            ..task("scrape", None)
        };
        // No sync: the child's acknowledged insert carries the link.
        (parent, insert(&store, child).await?.task_id)
    };
    let store = b.open(dir.path()).await?;
    assert_eq!(
        store.get(parent).await.ok_or("parent lost")?.children,
        [child]
    );
    Ok(())
}

pub async fn failures_on_a_version_are_found_for_a_rollback(b: &Backend) -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = b.open(dir.path()).await?;
    let failed_log = |attempt| super::AttemptRecord {
        error: Some(TaskFailure::new(FailureKind::Trap, "bad version")),
        ..log(attempt)
    };
    let failed = insert(&store, task("echo", None)).await?.task_id;
    store.transition(failed, start(1)).await?;
    store
        .transition(
            failed,
            Transition::Fail {
                log: Some(failed_log(1)),
                failure: TaskFailure::new(FailureKind::Trap, "bad version"),
                at: SystemTime::now(),
            },
        )
        .await?;
    let waiting = insert(&store, task("echo", None)).await?.task_id;
    store.transition(waiting, start(1)).await?;
    store
        .transition(
            waiting,
            Transition::Retry {
                log: failed_log(1),
                failure: TaskFailure::new(FailureKind::Retryable, "later"),
                due: SystemTime::now() + Duration::from_secs(60),
            },
        )
        .await?;
    let succeeded = insert(&store, task("echo", None)).await?.task_id;
    store.transition(succeeded, start(1)).await?;
    store.transition(succeeded, succeed(1)).await?;
    insert(&store, task("echo", None)).await?;
    assert_eq!(store.failed_on("echo", "1.0.0").await, [failed, waiting]);
    assert!(store.failed_on("echo", "2.0.0").await.is_empty());
    Ok(())
}

/// Runs every contract against one backend, in a module named after it.
macro_rules! conformance {
    ($backend:ident => $value:expr; $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $test() -> super::TestResult {
                    let backend = $value?;
                    super::$test(&backend).await
                }
            )*
        }
    };
}

/// The contracts: the first list for every backend, the second (what
/// survives a restart) for the durable ones.
macro_rules! every_backend {
    ($($test:ident),* ; $($durable:ident),* $(,)?) => {
        conformance!(memory => super::memory(); $($test),*);
        conformance!(sqlite => super::sqlite(); $($test,)* $($durable),*);
        conformance!(postgres => super::postgres(); $($test,)* $($durable),*);
    };
}

every_backend!(
    an_inserted_task_reads_back_as_it_was_given,
    an_idempotency_key_gives_back_the_first_task,
    transitions_follow_the_lifecycle_and_refusals_write_nothing,
    concurrent_starts_of_one_attempt_have_one_winner,
    prune_deletes_only_what_finished_before_the_cutoff,
    listings_filter_by_status_and_kind_newest_first,
    claims_come_most_urgent_first_and_hold_back_background_work,
    concurrent_claimers_never_get_the_same_task,
    the_queue_follows_each_tasks_state,
    a_child_is_linked_to_its_parent_by_its_insert,
    failures_on_a_version_are_found_for_a_rollback;
    idempotency_keys_hold_across_a_restart,
    the_last_change_of_every_task_survives_a_restart,
    a_running_attempt_is_found_after_an_unclean_stop,
    the_queue_is_rebuilt_from_the_tasks_after_a_restart,
    a_child_and_its_link_are_durable_together,
);
