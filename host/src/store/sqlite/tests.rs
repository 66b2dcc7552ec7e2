use super::schema::MIGRATIONS;
use super::*;
use crate::task::Priority;
use rusqlite::params;
use std::time::SystemTime;

fn options() -> SqliteOptions {
    SqliteOptions {
        synchronous: Synchronous::Normal,
        max_size_mb: 0,
    }
}

fn record(key: Option<&str>) -> TaskRecord {
    TaskRecord {
        category: Some("batch".into()),
        idempotency_key: key.map(str::to_string),
        ..TaskRecord::new(
            "echo",
            serde_json::json!({ "n": 1 }),
            Priority::High,
            SystemTime::now(),
        )
    }
}

#[tokio::test]
async fn migrating_a_version_3_database_keeps_its_tasks() -> Result<(), Box<dyn std::error::Error>>
{
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tasks.db");
    let task = record(Some("kept"));
    {
        let conn = Connection::open(&path)?;
        for sql in &MIGRATIONS[..3] {
            conn.execute_batch(sql)?;
        }
        conn.execute_batch("PRAGMA user_version = 3")?;
        conn.execute(
            "INSERT INTO tasks (id, kind, status, priority, idempotency_key, created_ms, record, seq)
             VALUES (?1, 'echo', 'queued', 'HIGH', 'kept', 0, ?2, 1)",
            params![task.task_id.to_string(), serde_json::to_string(&task)?],
        )?;
    }
    let options = options();
    let store = SqliteStore::open(&path, &options)?;
    assert_eq!(
        store.memory().get(task.task_id).map(|t| t.priority),
        Some(Priority::High)
    );
    assert!(matches!(
        store.insert(record(Some("kept"))).await?,
        Inserted::Existing(_)
    ));
    Ok(())
}

#[tokio::test]
async fn a_reopened_store_has_the_last_change_of_every_task()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tasks.db");
    let options = options();
    let store = SqliteStore::open(&path, &options)?;
    let a = record(Some("k"));
    let id = a.task_id;
    store.insert(a).await?;
    for attempt in 1..=3 {
        store.update(id, |t| {
            t.attempts = attempt;
            t.status = TaskStatus::RetryWait;
        });
    }
    store.sync().await?;
    drop(store);

    let reopened = SqliteStore::open(&path, &options)?;
    let back = reopened.memory().get(id).ok_or("task lost")?;
    assert_eq!((back.attempts, back.status), (3, TaskStatus::RetryWait));
    assert_eq!(back.priority, Priority::High);
    // The idempotency key is still taken, and new changes still win.
    assert!(matches!(
        reopened.insert(record(Some("k"))).await?,
        Inserted::Existing(_)
    ));
    reopened.update(id, |t| t.status = TaskStatus::Queued);
    reopened.sync().await?;
    drop(reopened);
    let again = SqliteStore::open(&path, &options)?;
    assert_eq!(
        again.memory().get(id).map(|t| t.status),
        Some(TaskStatus::Queued)
    );
    Ok(())
}

#[tokio::test]
async fn the_database_itself_refuses_a_second_task_with_a_key()
-> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tasks.db");
    let store = SqliteStore::open(&path, &options())?;
    store.insert(record(Some("once"))).await?;
    store.insert(record(None)).await?;
    store.insert(record(None)).await?;
    store.sync().await?;
    drop(store);
    let conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let copy = |key: &str| {
        conn.execute(
            &format!(
                "INSERT INTO tasks (id, kind, status, priority, idempotency_key, created_ms, record)
                 SELECT id || '-copy', kind, status, priority, {key}, created_ms, record
                 FROM tasks WHERE idempotency_key IS 'once'"
            ),
            [],
        )
    };
    assert!(copy("'once'").is_err(), "a duplicate key was stored");
    assert_eq!(copy("NULL")?, 1, "tasks without a key are many");
    Ok(())
}

#[tokio::test]
async fn a_row_that_cannot_be_read_stops_the_start() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tasks.db");
    let options = options();
    let store = SqliteStore::open(&path, &options)?;
    let task = record(None);
    store.insert(task.clone()).await?;
    store.sync().await?;
    drop(store);
    Connection::open(&path)?.execute(
        "UPDATE tasks SET record = '{\"not\": \"a task\"}' WHERE id = ?1",
        params![task.task_id.to_string()],
    )?;
    let Err(StoreError::Open { message, .. }) = SqliteStore::open(&path, &options) else {
        return Err("a store with an unreadable task opened".into());
    };
    assert!(message.contains("cannot be read"), "{message}");
    Ok(())
}
