//! Throwaway databases on the test server that `scripts/postgres-up` starts, one per test, so
//! tests run in parallel. A missing server fails the test with the command that starts it.

use std::path::PathBuf;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _};

/// Where `scripts/postgres-up` writes the server's URL: `$BASHO_PG_DIR/url`, by default
/// `/var/lib/basho-postgres/url`.
pub fn url_file() -> PathBuf {
    let dir = std::env::var_os("BASHO_PG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/basho-postgres"));
    dir.join("url")
}

/// The test server's URL; panics, naming the command to run, when there is none.
pub fn server_url() -> String {
    let file = url_file();
    match std::fs::read_to_string(&file) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "no PostgreSQL test server: {} is missing; start one with `scripts/postgres-up` \
             (it installs postgresql from Debian if needed)",
            file.display()
        ),
    }
}

/// A fresh database, dropped (with any connection still open to it) when this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// `postgres://…/basho_t_<random>`.
    pub url: String,
    name: String,
    admin: PgConnectOptions,
}

impl TestDatabase {
    /// Creates `basho_t_<random>` on the test server.
    pub async fn create() -> TestDatabase {
        let server = server_url();
        let admin: PgConnectOptions = server.parse().expect("the test server URL parses");
        let name = format!("basho_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin.connect().await.unwrap_or_else(|e| {
            panic!("cannot reach the PostgreSQL test server: {e}; run `scripts/postgres-up`")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("CREATE DATABASE");
        conn.close().await.ok();
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
            admin,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop may run inside a runtime (or during a panic): do the async work on a thread of
        // its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let mut conn = admin.connect().await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(done, Ok(Some(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
