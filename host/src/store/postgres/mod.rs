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

pub mod local;
mod schema;

use super::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr;

/// Connections a daemon keeps open by default.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The task store in a PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    /// The URL without its password, for messages and `/api/v1/nodes`.
    url: String,
    /// The schema version the database is at.
    version: usize,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("url", &self.url)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` with up to `pool_size` connections and migrates
    /// the schema.
    pub async fn connect(url: &str, pool_size: usize) -> Result<PostgresStore, StoreError> {
        let shown = redact(url);
        let fail = |message: String| StoreError::Connect {
            url: shown.clone(),
            message,
        };
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| fail(format!("the URL is not a PostgreSQL connection URL ({e})")))?;
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let mut client = pool.get().await.map_err(|e| fail(describe_pool(&e)))?;
        let version = schema::migrate(&mut client)
            .await
            .map_err(|e| fail(format!("migrating the schema failed: {}", describe(&e))))?;
        Ok(PostgresStore {
            pool,
            url: shown,
            version,
        })
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
