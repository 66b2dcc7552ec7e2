//! The PostgreSQL backend's own contracts (connecting, migrating, an
//! unreachable server), each against a throwaway [`LocalServer`].

use super::local::LocalServer;
use super::{PostgresOptions, PostgresStore, StoreError, redact, schema};
use crate::store::conformance::every_kind;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn pool(pool_size: usize) -> PostgresOptions {
    PostgresOptions {
        pool_size,
        ..PostgresOptions::default()
    }
}

/// A NORMAL task of `kind` in the `batch` pool.
fn queued(kind: &str) -> crate::store::TaskRecord {
    crate::store::TaskRecord {
        category: Some("batch".into()),
        ..crate::store::TaskRecord::new(
            kind,
            serde_json::json!({}),
            crate::task::Priority::Normal,
            std::time::SystemTime::now(),
        )
    }
}

fn server() -> Result<LocalServer, Box<dyn std::error::Error>> {
    Ok(LocalServer::start(&["fsync=off"])?)
}

#[tokio::test(flavor = "multi_thread")]
async fn daemons_connecting_at_once_migrate_once() -> TestResult {
    let pg = server()?;
    let url = pg.url();
    let options = pool(2);
    let (a, b, c) = tokio::join!(
        PostgresStore::connect(&url, "node-a", &options),
        PostgresStore::connect(&url, "node-a", &options),
        PostgresStore::connect(&url, "node-a", &options),
    );
    for store in [a?, b?, c?] {
        assert_eq!(store.schema_version(), schema::MIGRATIONS.len());
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let applied: i64 = client
        .query_one("SELECT count(*) FROM wasmhive_schema", &[])
        .await?
        .get(0);
    assert_eq!(applied, schema::MIGRATIONS.len() as i64);
    // Connecting again (a restart) applies nothing.
    let again = PostgresStore::connect(&url, "node-a", &pool(1)).await?;
    assert_eq!(again.schema_version(), schema::MIGRATIONS.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_an_error_that_says_so_and_passes() -> TestResult {
    let mut pg = server()?;
    let store = PostgresStore::connect(&pg.url(), "node-a", &pool(2)).await?;
    store.ping().await?;
    pg.stop()?;
    match store.ping().await {
        Err(StoreError::Unavailable(message)) => {
            assert!(message.contains("cannot be reached"), "{message}");
        }
        other => panic!("expected the store to be unavailable, got {other:?}"),
    }
    pg.start_again()?;
    store.ping().await?;
    Ok(())
}

#[tokio::test]
async fn connecting_to_nothing_names_the_url_without_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    let url = format!("postgres://app:secret@127.0.0.1:{port}/queue");
    match PostgresStore::connect(&url, "node-a", &pool(1)).await {
        Err(e @ StoreError::Connect { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&format!("postgres://app@127.0.0.1:{port}/queue")),
                "{message}"
            );
            assert!(!message.contains("secret"), "{message}");
            assert!(message.contains("cannot be reached"), "{message}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    match PostgresStore::connect("postgres://[::1", "node-a", &pool(1)).await {
        Err(StoreError::Connect { message, .. }) => {
            assert!(
                message.contains("not a PostgreSQL connection URL"),
                "{message}"
            );
        }
        other => panic!("expected a URL error, got {other:?}"),
    }
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(redact("postgres://u:p@h:5432/d"), "postgres://u@h:5432/d");
    assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
    assert_eq!(redact("postgres://h/d"), "postgres://h/d");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_inserted_on_one_daemon_wakes_the_others() -> TestResult {
    use std::time::Duration;
    let pg = server()?;
    // No polling within the test: only a notification can wake node B.
    let hour = Duration::from_secs(3600);
    let options = PostgresOptions {
        poll_every: hour,
        ..pool(2)
    };
    let a = PostgresStore::connect(&pg.url(), "node-a", &options).await?;
    let b = PostgresStore::connect(&pg.url(), "node-b", &options).await?;
    tokio::time::timeout(Duration::from_secs(20), b.until_listening())
        .await
        .map_err(|_| "node B never listened")?;
    let woken = b.ready_waker("batch");
    let notified = woken.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let task = queued("echo");
    a.insert(task).await?;
    tokio::time::timeout(Duration::from_secs(20), notified)
        .await
        .map_err(|_| "node B was never woken for node A's task")?;
    assert_eq!(
        b.claim("batch", 10, true, &every_kind()).await.len(),
        1,
        "node B claims node A's task"
    );
    assert!(
        a.claim("batch", 10, true, &every_kind()).await.is_empty(),
        "claimed once"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_whose_lease_ran_out_is_rescued_and_its_late_outcome_refused() -> TestResult {
    use crate::store::{AttemptPlugin, AttemptRecord, Transition, TransitionError};
    use crate::task::{FailureKind, TaskFailure};
    use std::time::SystemTime;
    let pg = server()?;
    let a = PostgresStore::connect(&pg.url(), "node-a", &pool(2)).await?;
    let b = PostgresStore::connect(&pg.url(), "node-b", &pool(2)).await?;
    let task = queued("echo");
    let id = task.task_id;
    a.insert(task).await?;
    assert_eq!(a.claim("batch", 1, true, &every_kind()).await.len(), 1);
    let plugin = AttemptPlugin {
        name: "echo".into(),
        version: "1.0.0".into(),
    };
    let start = |attempt| Transition::Start {
        attempt,
        plugin: plugin.clone(),
        category: "batch".into(),
        at: SystemTime::now(),
    };
    let log = |attempt, error: Option<TaskFailure>| AttemptRecord {
        attempt,
        plugin: plugin.clone(),
        started_at: SystemTime::now(),
        duration_ms: 1,
        error,
        charged: true,
    };
    a.transition(id, start(1)).await?;
    assert!(b.expired().await.is_empty(), "a live lease is not rescued");
    // Node A stops renewing (it died): its lease runs out.
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE wasmhive_tasks SET lease_until = now() - interval '1 second' WHERE id = $1",
            &[&id],
        )
        .await?;
    let expired = b.expired().await;
    assert_eq!(expired.iter().map(|t| t.task_id).collect::<Vec<_>>(), [id]);
    let lost = TaskFailure::new(FailureKind::Interrupted, "node A is gone");
    b.transition(
        id,
        Transition::Interrupted {
            log: log(1, Some(lost)),
        },
    )
    .await?;
    assert!(b.expired().await.is_empty());
    assert_eq!(
        b.claim("batch", 1, true, &every_kind()).await.len(),
        1,
        "queued again"
    );
    b.transition(id, start(2)).await?;
    // Node A's outcome arrives late: its attempt is no longer current.
    let late = Transition::Succeed {
        log: log(1, None),
        result: serde_json::json!("late"),
        at: SystemTime::now(),
    };
    assert!(matches!(
        a.transition(id, late).await,
        Err(TransitionError::Stale {
            attempt: 1,
            current: 2
        })
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_that_lapsed_and_was_taken_cannot_be_started_by_the_daemon_that_lost_it()
-> TestResult {
    use crate::store::{AttemptPlugin, Transition, TransitionError};
    use crate::task::TaskStatus;
    use std::time::SystemTime;
    let pg = server()?;
    let a = PostgresStore::connect(&pg.url(), "node-a", &pool(2)).await?;
    let b = PostgresStore::connect(&pg.url(), "node-b", &pool(2)).await?;
    let task = queued("echo");
    let id = task.task_id;
    a.insert(task).await?;
    assert_eq!(a.claim("batch", 1, true, &every_kind()).await.len(), 1);
    // Node A is too loaded to renew: its claim's lease runs out while the
    // job waits for a worker there, and node B claims the task.
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE wasmhive_tasks SET lease_until = now() - interval '1 second' WHERE id = $1",
            &[&id],
        )
        .await?;
    assert_eq!(b.claim("batch", 1, true, &every_kind()).await.len(), 1);
    let start = || Transition::Start {
        attempt: 1,
        plugin: AttemptPlugin {
            name: "echo".into(),
            version: "1.0.0".into(),
        },
        category: "batch".into(),
        at: SystemTime::now(),
    };
    assert!(
        matches!(
            a.transition(id, start()).await,
            Err(TransitionError::Illegal {
                transition: "start",
                ..
            })
        ),
        "the claim is node B's now"
    );
    b.transition(id, start()).await?;
    let row = client
        .query_one(
            "SELECT claimed_by, lease_until > now() FROM wasmhive_tasks WHERE id = $1",
            &[&id],
        )
        .await?;
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("node-b"));
    assert!(row.get::<_, bool>(1), "a start takes a fresh lease");
    assert_eq!(a.get(id).await.map(|t| t.status), Some(TaskStatus::Running));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_claims_only_the_kinds_it_has_loaded() -> TestResult {
    use crate::store::TaskRecord;
    use crate::task::Priority;
    use std::time::SystemTime;
    let pg = server()?;
    let store = PostgresStore::connect(&pg.url(), "node-a", &pool(2)).await?;
    let of = |kind: &str| TaskRecord {
        category: Some("batch".into()),
        ..TaskRecord::new(
            kind,
            serde_json::json!({}),
            Priority::Normal,
            SystemTime::now(),
        )
    };
    let scrape = of("scrape");
    let scrape_id = scrape.task_id;
    store.insert(scrape).await?;
    store.insert(of("embed")).await?;
    let echo = ["echo".to_string()];
    assert!(
        store.claim("batch", 10, true, &echo).await.is_empty(),
        "not a kind it has"
    );
    let both = ["echo".to_string(), "scrape".to_string()];
    let claimed = store.claim("batch", 10, true, &both).await;
    assert_eq!(
        claimed.iter().map(|j| j.task_id).collect::<Vec<_>>(),
        [scrape_id]
    );
    assert_eq!(
        store.depths("batch").await.iter().sum::<usize>(),
        1,
        "embed waits for a daemon that has it"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_inserts_and_transitions_share_batches_and_each_gets_its_own_outcome()
-> TestResult {
    use crate::store::{AttemptPlugin, Inserted, Transition, TransitionError};
    use std::time::SystemTime;
    let pg = server()?;
    let store = PostgresStore::connect(&pg.url(), "node-a", &pool(4)).await?;
    // 200 inserts at once, ten of them under one idempotency key: one task
    // for the key, every caller given it.
    let inserts = (0..200).map(|i| {
        let store = store.clone();
        let mut task = queued("echo");
        if i % 20 == 0 {
            task.idempotency_key = Some("once".into());
        }
        async move { store.insert(task).await }
    });
    let inserted = futures::future::join_all(inserts).await;
    let mut new = Vec::new();
    let mut keyed = std::collections::HashSet::new();
    for outcome in inserted {
        match outcome? {
            Inserted::New(t) => {
                if t.idempotency_key.is_some() {
                    keyed.insert(t.task_id);
                }
                new.push(t.task_id);
            }
            Inserted::Existing(t) => {
                keyed.insert(t.task_id);
            }
        }
    }
    assert_eq!(new.len(), 191, "190 without a key and one with it");
    assert_eq!(keyed.len(), 1, "every keyed caller got the same task");
    let claimed = store.claim("batch", 500, true, &every_kind()).await;
    assert_eq!(claimed.len(), 191);
    let start = |attempt| Transition::Start {
        attempt,
        plugin: AttemptPlugin {
            name: "echo".into(),
            version: "1.0.0".into(),
        },
        category: "batch".into(),
        at: SystemTime::now(),
    };
    // Every task started twice at once: exactly one start of each wins,
    // whichever batch they fall in; the other is stale. And one start of a
    // task that does not exist is refused without failing the others.
    let missing = uuid::Uuid::new_v4();
    let starts = new
        .iter()
        .chain(new.iter())
        .chain(std::iter::once(&missing))
        .map(|id| {
            let store = store.clone();
            let id = *id;
            let start = start(1);
            async move { (id, store.transition(id, start).await) }
        });
    let mut won = std::collections::HashMap::new();
    for (id, outcome) in futures::future::join_all(starts).await {
        match outcome {
            Ok(()) => *won.entry(id).or_insert(0) += 1,
            Err(TransitionError::Illegal {
                from: "running", ..
            }) => {}
            Err(TransitionError::NotFound(gone)) => assert_eq!(gone, missing),
            Err(other) => panic!("unexpected refusal of {id}: {other}"),
        }
    }
    assert_eq!(won.len(), new.len());
    assert!(won.values().all(|n| *n == 1), "one start per task");
    for id in &new {
        let task = store.get(*id).await.ok_or("the task is gone")?;
        assert_eq!(task.status, crate::task::TaskStatus::Running);
        assert_eq!(task.attempts, 1);
    }
    Ok(())
}

#[test]
fn a_renewal_that_read_the_holds_before_a_task_was_taken_again_does_not_stop_it() {
    let (a, b, c) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let mut held: std::collections::HashMap<uuid::Uuid, u64> =
        [(a, 1), (b, 2), (c, 3)].into_iter().collect();
    let snapshot = vec![(a, 1), (b, 2), (c, 3)];
    // While the renewal ran: `b` was rescued and claimed by this daemon
    // again (a new hold), `c` was rescued by another daemon.
    held.insert(b, 4);
    let kept: std::collections::HashSet<uuid::Uuid> = [a].into_iter().collect();
    let lost = super::lost_holds(&mut held, &snapshot, &kept);
    assert_eq!(lost, vec![c], "only the hold the renewal judged is lost");
    assert_eq!(held.get(&b), Some(&4));
    assert_eq!(held.get(&a), Some(&1));
    assert!(!held.contains_key(&c));
}
