//! PostgresResource against a real server: construction, pooling, errors.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use common::TestDb;
use dagrs_postgres::{Error, PostgresConfig, PostgresResource, DATABASE_URL};

async fn current_database(pg: &PostgresResource) -> String {
    let client = pg.get().await.expect("a pooled client");
    client
        .query_one("SELECT current_database()", &[])
        .await
        .expect("SELECT current_database()")
        .get(0)
}

#[tokio::test]
async fn from_url_connects_to_the_named_database() {
    let db = TestDb::create().await;
    let pg = PostgresResource::from_url(&db.url).unwrap();
    assert_eq!(current_database(&pg).await, db.name);
    assert_eq!(pg.dbname(), db.name);
}

#[tokio::test]
async fn from_fields_builds_a_working_pool() {
    let db = TestDb::create().await;
    let config = PostgresConfig {
        dbname: db.name.clone(),
        pool_size: 2,
        connect_timeout: Duration::from_secs(2),
        ..PostgresConfig::default()
    };
    let pg = config.build().unwrap();
    assert_eq!(current_database(&pg).await, db.name);
    assert_eq!(pg.pool().status().max_size, 2);
}

#[tokio::test]
async fn from_env_reads_database_url_and_explains_when_it_is_unset() {
    // The only test in this binary that touches DATABASE_URL.
    let db = TestDb::create().await;
    std::env::set_var(DATABASE_URL, &db.url);
    let pg = PostgresResource::from_env();
    std::env::remove_var(DATABASE_URL);
    assert_eq!(current_database(&pg.unwrap()).await, db.name);

    let err = PostgresResource::from_env().unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingEnv {
                var: "DATABASE_URL"
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "environment variable DATABASE_URL is not set; set it to a PostgreSQL URL such as \
         postgres://user:password@127.0.0.1:5432/dbname"
    );

    // Set but empty is a mistake too, not a silent `postgres` database on localhost.
    std::env::set_var(DATABASE_URL, " ");
    let empty = PostgresResource::from_env();
    std::env::remove_var(DATABASE_URL);
    let err = empty.unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    let err = PostgresResource::from_url("").unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
}

#[tokio::test]
async fn clones_share_one_pool() {
    let db = TestDb::create().await;
    let copy = db.pg.clone();
    let first = db.client().await;
    let second = copy.get().await.unwrap();
    let status = db.pg.pool().status();
    assert_eq!((status.size, status.available), (2, 0));
    drop((first, second));
    assert_eq!(copy.pool().status().available, 2);
}

#[tokio::test]
async fn a_busy_pool_reports_its_size_instead_of_waiting_forever() {
    let db = TestDb::create().await;
    let pg = PostgresConfig {
        dbname: db.name.clone(),
        pool_size: 1,
        acquire_timeout: Duration::from_millis(200),
        ..PostgresConfig::default()
    }
    .build()
    .unwrap();
    let held = pg.get().await.unwrap();
    let err = pg.get().await.unwrap_err();
    assert!(
        matches!(err, Error::PoolExhausted { pool_size: 1, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "timed out after 200ms waiting for a free connection from the pool of 1 to \
             PostgreSQL at 127.0.0.1:5432/{name} (postgres://postgres@127.0.0.1:5432/{name}); \
             raise pool_size or return clients to the pool sooner",
            name = db.name
        )
    );
    drop(held);
    assert_eq!(current_database(&pg).await, db.name);
}

#[tokio::test]
async fn debug_and_masked_url_hide_the_password() {
    let db = TestDb::create().await;
    // Trust authentication on the test server accepts any password.
    let url = db.url.replace("postgres@", "postgres:s3cret-pw@");
    let pg = PostgresResource::from_url(&url).unwrap();
    assert_eq!(current_database(&pg).await, db.name);
    let masked = format!("postgres://postgres:***@127.0.0.1:5432/{}", db.name);
    assert_eq!(pg.masked_url(), masked);
    let debug = format!("{pg:?}");
    assert!(debug.contains(&masked), "{debug}");
    assert!(!debug.contains("s3cret"), "{debug}");
}

#[tokio::test]
async fn unreachable_server_fails_fast_naming_host_port_and_database() {
    let pg = PostgresResource::from_url("postgres://postgres:s3cret@127.0.0.1:1/ecoanp").unwrap();
    let err = pg.get().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot connect to PostgreSQL at 127.0.0.1:1/ecoanp \
         (postgres://postgres:***@127.0.0.1:1/ecoanp): connection refused; \
         check that the server is running and DATABASE_URL is right"
    );
    assert!(!format!("{err:?}").contains("s3cret"));
}

#[tokio::test]
async fn unknown_role_is_an_authentication_error() {
    let db = TestDb::create().await;
    let url = db.url.replace("postgres@", "dagrs_no_such_role:s3cret@");
    let pg = PostgresResource::from_url(&url).unwrap();
    let err = pg.get().await.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, Error::Authentication { user, .. } if user == "dagrs_no_such_role"),
        "{err:?}"
    );
    assert_eq!(
        message,
        format!(
            "PostgreSQL at 127.0.0.1:5432/{name} (postgres://dagrs_no_such_role:***@127.0.0.1:5432/{name}) \
             refused to log in user \"dagrs_no_such_role\": role \"dagrs_no_such_role\" does not exist; \
             check the user name and password in DATABASE_URL",
            name = db.name
        )
    );
}

/// Plays a server that asks for a cleartext password and rejects it the way
/// PostgreSQL does (SQLSTATE 28P01). The test server trusts every local
/// connection, so it cannot reject a password itself. Returns the password
/// the client sent.
fn reject_password_once(listener: TcpListener) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().expect("a client");
        let mut length = [0u8; 4];
        socket.read_exact(&mut length).unwrap();
        let mut startup = vec![0u8; u32::from_be_bytes(length) as usize - 4];
        socket.read_exact(&mut startup).unwrap();
        // AuthenticationCleartextPassword.
        socket.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).unwrap();
        let mut header = [0u8; 5];
        socket.read_exact(&mut header).unwrap();
        assert_eq!(header[0], b'p', "a password message");
        let mut password =
            vec![0u8; u32::from_be_bytes(header[1..].try_into().unwrap()) as usize - 4];
        socket.read_exact(&mut password).unwrap();
        password.pop(); // the terminating NUL
        let mut body = Vec::new();
        for (field, value) in [
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "28P01"),
            (
                b'M',
                "password authentication failed for user \"ecoanp_user\"",
            ),
        ] {
            body.push(field);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut response = vec![b'E'];
        response.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        response.extend_from_slice(&body);
        socket.write_all(&response).unwrap();
        String::from_utf8(password).unwrap()
    })
}

#[tokio::test]
async fn wrong_password_is_an_authentication_error_with_the_password_masked() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = reject_password_once(listener);
    let url = format!("postgres://ecoanp_user:wrong-s3cret@127.0.0.1:{port}/ecoanp");
    let err = PostgresResource::from_url(&url)
        .unwrap()
        .get()
        .await
        .unwrap_err();
    assert_eq!(
        server.join().unwrap(),
        "wrong-s3cret",
        "the client sent the password"
    );
    assert!(matches!(err, Error::Authentication { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "PostgreSQL at 127.0.0.1:{port}/ecoanp (postgres://ecoanp_user:***@127.0.0.1:{port}/ecoanp) \
             refused to log in user \"ecoanp_user\": password authentication failed for user \
             \"ecoanp_user\"; check the user name and password in DATABASE_URL"
        )
    );
    assert!(!format!("{err:?}").contains("wrong-s3cret"));
}

#[tokio::test]
async fn ensure_database_creates_a_missing_database_once() {
    let db = TestDb::reserve();
    let err = db.pg.get().await.unwrap_err();
    assert!(
        matches!(&err, Error::DatabaseNotFound { dbname, .. } if *dbname == db.name),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "database \"{}\" does not exist on PostgreSQL at 127.0.0.1:5432/",
            db.name
        )),
        "{err}"
    );
    assert!(db.pg.ensure_database().await.unwrap(), "created");
    assert_eq!(current_database(&db.pg).await, db.name);
    assert!(!db.pg.ensure_database().await.unwrap(), "already there");
}

#[tokio::test]
async fn ensure_database_reports_an_unreachable_server() {
    let pg = PostgresResource::from_url("postgres://postgres:s3cret@127.0.0.1:1/ecoanp").unwrap();
    let err = pg.ensure_database().await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1/ecoanp"), "{err}");
}
