//! Starting many processes at once on a fresh deployment: every one must come up, and what
//! they set up (the database, its migrations, the stream, the seeded admin) exists once.

use std::time::Duration;

use chronicle::{Application, Roles};
use workers::EventBus;

use crate::support::{eventually, TestEnv};

const ADMIN: &str = "first-admin@example.com";
const ADMIN_PASSWORD: &str = "a-long-admin-passphrase-9";

#[tokio::test]
async fn four_processes_started_together_on_a_fresh_database_all_come_up_with_one_admin() {
    let env = TestEnv::new()
        .set("ADMIN_EMAIL", ADMIN)
        .set("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .set("DATABASE_MAX_CONNECTIONS", "8");
    // All four race through database creation, migrations, the stream and the seed.
    let builds =
        futures::future::join_all((0..4).map(|_| Application::build(env.config(), Roles::all())))
            .await;
    let mut apps = vec![];
    for (i, built) in builds.into_iter().enumerate() {
        match built {
            Ok(app) => apps.push(app),
            Err(e) => panic!("process {i} did not come up: {e:#}"),
        }
    }
    let pool = apps[0].pool().clone();
    let addrs: Vec<_> = apps.iter().map(|a| a.local_addr().expect("api")).collect();
    let stops: Vec<_> = apps.iter().map(|a| a.stop_token()).collect();
    let handles: Vec<_> = apps
        .into_iter()
        .map(|a| tokio::spawn(a.run_until_stopped()))
        .collect();

    let client = reqwest::Client::new();
    for addr in &addrs {
        let r = client
            .get(format!("http://{addr}/health/live"))
            .send()
            .await
            .expect("request sent");
        assert_eq!(r.status(), 200, "{addr}");
    }
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .expect("query")
        }
    };
    assert_eq!(
        count("select count(*) from events where event_type = 'UserRegistered'").await,
        1,
        "the admin is registered exactly once"
    );
    assert_eq!(count("select count(*) from email_claims").await, 1);
    // every migration applied once, none left failed
    assert_eq!(
        count("select count(*) from _sqlx_migrations where success").await,
        eventstore::database::MIGRATOR.iter().count() as i64
    );
    // one relay among them publishes the log, once, to the one stream
    let events = count("select count(*) from events").await as u64;
    let bus = EventBus::connect(env.bus_config()).await.expect("nats");
    eventually("the log on the stream", Duration::from_secs(30), || {
        let bus = bus.clone();
        let stream = env.stream.clone();
        async move {
            let mut s = bus.jetstream.get_stream(&stream).await.ok()?;
            (s.info().await.ok()?.state.messages == events).then_some(())
        }
    })
    .await;
    eventually(
        "the users read model shows one admin",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                let n: i64 = sqlx::query_scalar("select count(*) from users where role = 'admin'")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
                (n == 1).then_some(())
            }
        },
    )
    .await;
    let r = client
        .post(format!("http://{}/api/v1/auth/login", addrs[3]))
        .json(&serde_json::json!({ "email": ADMIN, "password": ADMIN_PASSWORD }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(r.status(), 200);

    for stop in stops {
        stop.cancel();
    }
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
    }
    env.cleanup().await;
}

#[tokio::test]
async fn processes_that_disagree_about_the_stream_all_set_it_up_at_the_same_time() {
    // A rolling upgrade: old and new processes start at once with different duplicate
    // windows. JetStream lets one create the stream and tells the others the name is in
    // use; they must look again and update it, not fail.
    let env = TestEnv::new();
    let mut buses = vec![];
    for i in 0..6u64 {
        let mut config = env.bus_config();
        config.duplicate_window = Duration::from_secs(60 + i * 30);
        buses.push(EventBus::connect(config).await.expect("nats"));
    }
    let results = futures::future::join_all(buses.iter().map(|bus| bus.ensure_stream())).await;
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "process {i}: {:?}", r.as_ref().err());
    }
    let mut stream = buses[0]
        .jetstream
        .get_stream(&env.stream)
        .await
        .expect("the stream exists");
    let subjects = stream.info().await.expect("info").config.subjects.clone();
    assert_eq!(subjects, vec![env.bus_config().all_subjects()]);
    env.cleanup().await;
}

#[tokio::test]
async fn a_process_of_the_release_before_starts_on_a_database_a_newer_release_migrated() {
    let env = TestEnv::new();
    let app = env
        .spawn(chronicle::Roles::only(&[chronicle::Role::Api]))
        .await;
    // a rolling upgrade: a newer release applied a migration this binary does not know
    sqlx::query(
        "insert into _sqlx_migrations (version, description, success, checksum, execution_time) \
         values (99999999, 'from a newer release', true, '\\x00', 0)",
    )
    .execute(&app.pool)
    .await
    .expect("a newer release's migration");
    app.stop().await;
    let again = env
        .spawn(chronicle::Roles::only(&[chronicle::Role::Api]))
        .await;
    assert_eq!(again.get_json("/health/live").await.0, 200);
    again.finish().await;
}
