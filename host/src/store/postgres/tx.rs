//! Short transactions in two round trips. tokio-postgres pipelines the
//! requests sent before their answers are read, so `BEGIN` goes out with
//! the transaction's first statement and `COMMIT` with its last; statements
//! are prepared once per connection ([`Object::prepare_cached`]).
//!
//! A transaction dropped before it ended (its future was cancelled, say
//! when an HTTP client went away) must not go back to the pool open, with
//! its row locks held: its connection is taken out of the pool and closed,
//! and the server rolls it back.

use super::describe;
use crate::store::StoreError;
use deadpool_postgres::Object;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) fn unavailable(e: &tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(describe(e))
}

/// An open transaction on a pooled connection.
pub(super) struct Tx {
    client: Option<Object>,
}

impl Tx {
    /// Runs `begin` (`BEGIN`, perhaps with `SET LOCAL`s after it) and then
    /// `first` in one round trip; the transaction and `first`'s rows.
    pub async fn begin_with(
        client: Object,
        begin: &str,
        first: &Statement,
        params: Params<'_>,
    ) -> Result<(Tx, Vec<Row>), StoreError> {
        let tx = Tx {
            client: Some(client),
        };
        let (begun, rows) = {
            let client = tx.client()?;
            futures::join!(client.batch_execute(begin), client.query(first, params))
        };
        begun.map_err(|e| unavailable(&e))?;
        let rows = rows.map_err(|e| unavailable(&e))?;
        Ok((tx, rows))
    }

    /// The transaction's connection (there until it ends, which consumes
    /// the transaction).
    pub fn client(&self) -> Result<&Object, StoreError> {
        self.client
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("the transaction has ended".to_string()))
    }

    /// Runs `before` (simple statements, may be empty), then `last`, then
    /// `COMMIT`, in one round trip; `last`'s rows. A failed statement
    /// makes the `COMMIT` a rollback.
    pub async fn commit_with(
        mut self,
        before: &str,
        last: &Statement,
        params: Params<'_>,
    ) -> Result<Vec<Row>, StoreError> {
        let (prelude, rows, committed) = {
            let client = self.client()?;
            let prelude = async {
                if before.is_empty() {
                    Ok(())
                } else {
                    client.batch_execute(before).await
                }
            };
            futures::join!(
                prelude,
                client.query(last, params),
                client.batch_execute("COMMIT")
            )
        };
        prelude.map_err(|e| unavailable(&e))?;
        let rows = rows.map_err(|e| unavailable(&e))?;
        committed.map_err(|e| unavailable(&e))?;
        self.client.take();
        Ok(rows)
    }

    /// Commits with nothing more to run.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.client()?
            .batch_execute("COMMIT")
            .await
            .map_err(|e| unavailable(&e))?;
        self.client.take();
        Ok(())
    }

    /// Rolls back; a connection that cannot is closed (see the module doc).
    pub async fn rollback(mut self) {
        if let Ok(client) = self.client()
            && client.batch_execute("ROLLBACK").await.is_ok()
        {
            self.client.take();
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

/// `sql` prepared on `client` (once per connection).
pub(super) async fn prepared(client: &Object, sql: &str) -> Result<Statement, StoreError> {
    client
        .prepare_cached(sql)
        .await
        .map_err(|e| unavailable(&e))
}
