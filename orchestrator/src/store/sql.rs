//! One SQL store for SQLite and PostgreSQL: [`SqlStore`] over a pool of either database. Its
//! queries (`store/sql/`) are written once, with PostgreSQL's numbered placeholders, and compiled
//! for each database; [`Dialect`] holds what really differs between the two.
//!
//! Each file of `store/sql/` is compiled once per database, with `Db` naming it, rather than
//! being generic over it: code generic over sqlx's `Database` must restate, on every function
//! and impl, that each column type encodes and decodes and that a connection executes queries.

use std::borrow::Cow;

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, Database, Pool, Transaction};

/// The queries compiled for SQLite.
#[path = "sql"]
pub(super) mod on_sqlite {
    /// The database these queries run on.
    type Db = sqlx::Sqlite;

    mod audit;
    mod consent;
    mod federated;
    mod queue;
    mod releases;
    mod revocations;
    pub(in crate::store) mod rows;
    mod tasks;
    mod tokens;
    mod usage;
    mod workspaces;
}

/// The same queries compiled for PostgreSQL.
#[path = "sql"]
#[expect(
    clippy::duplicate_mod,
    reason = "each database gets its own copy of the queries (see the module's documentation)"
)]
pub(super) mod on_postgres {
    /// The database these queries run on.
    type Db = sqlx::Postgres;

    mod audit;
    mod consent;
    mod federated;
    mod queue;
    mod releases;
    mod revocations;
    pub(in crate::store) mod rows;
    mod tasks;
    mod tokens;
    mod usage;
    mod workspaces;
}

/// The SQL implementation of [`Store`](super::Store) on database `DB` (see
/// [`SqliteStore`](super::SqliteStore) and [`PostgresStore`](super::PostgresStore)).
#[derive(Debug)]
pub struct SqlStore<DB: Dialect> {
    pub(super) pool: Pool<DB>,
    /// Where writes run: the same pool on PostgreSQL; on SQLite a pool of one connection, so
    /// writers queue for it in the process instead of in SQLite's busy handler, which sleeps
    /// (1 to 100 ms a try) while another connection holds the write lock.
    pub(super) writer: Pool<DB>,
    pub(super) extra: DB::Extra,
}

impl<DB: Dialect> Clone for SqlStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            writer: self.writer.clone(),
            extra: self.extra.clone(),
        }
    }
}

/// Work that writers on every replica must do one at a time.
#[derive(Debug, Clone, Copy)]
pub enum Turn<'a> {
    /// Appending to the audit chain, so it stays linear.
    Audit,
    /// Creating with this idempotency key, so the second request replays the first.
    Idempotency(&'a str),
    /// Ingesting this site's usage, so its acknowledgement has no gap.
    Usage(&'a str),
    /// Placing a workspace at this site, so two creates never both take its last capacity.
    Placement(&'a str),
}

/// A committed change the other replicas must hear of.
#[derive(Debug, Clone, Copy)]
pub enum News<'a> {
    /// The site's desired state moved to this revision.
    Revision {
        /// The site.
        site: &'a str,
        /// Its new revision.
        revision: i64,
    },
    /// A revocation took this revision.
    Revocation(i64),
    /// This site registered.
    Site(&'a str),
}

/// What differs between the databases the store runs on. The queries are written for
/// PostgreSQL; each item says what another database needs instead.
#[async_trait]
pub trait Dialect: Database {
    /// What the store keeps beside its pool on this database.
    type Extra: std::fmt::Debug + Clone + Send + Sync + 'static;

    /// What starts a numbered placeholder: `$` as written, or `?` where `$1` is a named
    /// parameter numbered by first appearance (SQLite).
    const MARK: char;
    /// The larger of two values (`GREATEST`; SQLite's two-argument `MAX`).
    const GREATEST: &'static str;
    /// The 1-based position of a substring, 0 when absent (`strpos`; SQLite's `instr`).
    const STRPOS: &'static str;
    /// Locks the rows a read returns until the transaction ends; empty where a write
    /// transaction already holds the whole database.
    const FOR_UPDATE: &'static str;

    /// The sum, as a 64-bit integer and 0 over no rows, of integer `member` of JSON text
    /// `column`.
    fn sum_json_int(column: &str, member: &str) -> String;

    /// Begins a transaction that reads, then writes what it read.
    async fn begin_write(pool: &Pool<Self>) -> Result<Transaction<'static, Self>, sqlx::Error>;

    /// Begins a transaction whose reads all see one snapshot.
    async fn begin_snapshot(pool: &Pool<Self>) -> Result<Transaction<'static, Self>, sqlx::Error>;

    /// Waits in `tx` until no writer of another replica is doing `turn`.
    async fn take_turn(
        tx: &mut Transaction<'static, Self>,
        turn: Turn<'_>,
    ) -> Result<(), sqlx::Error>;

    /// Tells the other replicas of `news` once `tx` commits.
    async fn announce(
        tx: &mut Transaction<'static, Self>,
        news: News<'_>,
    ) -> Result<(), sqlx::Error>;

    /// `text` with its placeholders in this database's style. Only fixed text and placeholders
    /// are ever spliced into a query; every value is bound.
    fn sql(text: impl Into<Cow<'static, str>>) -> AssertSqlSafe<Cow<'static, str>> {
        AssertSqlSafe(renumber(text.into(), Self::MARK))
    }
}

/// `text` with every `$<digit>` outside a string literal started by `mark` instead.
fn renumber(text: Cow<'static, str>, mark: char) -> Cow<'static, str> {
    if mark == '$' || !text.contains('$') {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        quoted ^= c == '\'';
        let placeholder = c == '$' && !quoted && chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if placeholder { mark } else { c });
    }
    Cow::Owned(out)
}

/// `n` placeholders numbered from `first`, comma-separated: the list of an `IN`.
pub(crate) fn marks(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns of `workspaces`, in the order the insert binds them.
pub(crate) const COLUMNS: &str = "id, project, owner, template, site, state, message, datasets, \
     resources, visas, visa_refs, image, command, created_at, updated_at, expires_at, revision, \
     launch";

/// `v` as the JSON text a column keeps.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("store values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_outside_string_literals() {
        let q = "SELECT json_extract(r, '$.a'), '$1' FROM t WHERE a = $1 AND b IN ($2, $10)";
        assert_eq!(
            renumber(q.into(), '?'),
            "SELECT json_extract(r, '$.a'), '$1' FROM t WHERE a = ?1 AND b IN (?2, ?10)"
        );
        assert_eq!(renumber(q.into(), '$'), q);
        assert_eq!(
            renumber("x = 'it''s $1' OR y = $2".into(), '?'),
            "x = 'it''s $1' OR y = ?2"
        );
        assert_eq!(marks(3, 3), "$3, $4, $5");
        assert_eq!(marks(1, 0), "");
    }
}
