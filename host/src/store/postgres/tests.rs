//! The PostgreSQL backend's own contracts (connecting, migrating, an
//! unreachable server), each against a throwaway [`LocalServer`].

use super::local::LocalServer;
use super::{PostgresStore, StoreError, redact, schema};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn server() -> Result<LocalServer, Box<dyn std::error::Error>> {
    Ok(LocalServer::start(&["fsync=off"])?)
}

#[tokio::test(flavor = "multi_thread")]
async fn daemons_connecting_at_once_migrate_once() -> TestResult {
    let pg = server()?;
    let url = pg.url();
    let (a, b, c) = tokio::join!(
        PostgresStore::connect(&url, 2),
        PostgresStore::connect(&url, 2),
        PostgresStore::connect(&url, 2),
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
    let again = PostgresStore::connect(&url, 1).await?;
    assert_eq!(again.schema_version(), schema::MIGRATIONS.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_is_an_error_that_says_so_and_passes() -> TestResult {
    let mut pg = server()?;
    let store = PostgresStore::connect(&pg.url(), 2).await?;
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
    match PostgresStore::connect(&url, 1).await {
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
    match PostgresStore::connect("postgres://[::1", 1).await {
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
