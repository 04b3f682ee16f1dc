//! The pipe from the log to the read models: the relay never skips or repeats, the
//! projectors apply every event exactly once, whatever the order of commits.

use std::collections::HashSet;
use std::time::Duration;

use aggregates::user::{User, UserCommand, UserPolicy, ROLE_USER};
use aggregates::{EventMetadata, LogCursor};
use async_nats::jetstream::message::PublishMessage;
use chronicle::{Role, Roles};
use eventstore::CommandBus;
use futures::StreamExt;
use projections::{event_stats, rebuild::rebuild, users, ReadModel};
use sqlx::PgConnection;
use uuid::Uuid;
use workers::relay::{Relay, RelayConfig};

use crate::support::{eventually, TestEnv};

/// Append `UserRegistered` for a new user in the caller's transaction, the way postgres-es
/// does (same columns), so a test can hold the transaction open.
pub(crate) async fn insert_registered(conn: &mut PgConnection, user_id: Uuid, email: &str) {
    let payload = serde_json::json!({"UserRegistered": {
        "user_id": user_id, "email": email, "display_name": null, "password_hash": null,
        "role": "user", "plan": "free"}});
    insert_event(conn, user_id, 1, "UserRegistered", payload).await;
}

async fn insert_event(
    conn: &mut PgConnection,
    user_id: Uuid,
    sequence: i64,
    event_type: &str,
    payload: serde_json::Value,
) {
    sqlx::query(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         values ('user', $1, $2, $3, '1.0', $4, '{}')",
    )
    .bind(user_id.to_string())
    .bind(sequence)
    .bind(event_type)
    .bind(payload)
    .execute(conn)
    .await
    .expect("insert event");
}

fn relay(app: &crate::support::TestApp, batch_size: i64) -> Relay {
    Relay::new(
        app.pool.clone(),
        app.bus.clone(),
        RelayConfig {
            batch_size,
            ..RelayConfig::default()
        },
    )
}

/// Step the relay until it has nothing more to publish; returns how many it published.
async fn drain(relay: &Relay) -> usize {
    let mut total = 0;
    loop {
        let report = relay.step().await.expect("relay step");
        if report.published == 0 {
            return total;
        }
        total += report.published;
    }
}

/// Step the relay until it has published `expected` events in all (another test's open
/// transaction elsewhere in the cluster may hold the readable log back for a moment), then
/// check that nothing more comes.
async fn drain_exactly(relay: &Relay, expected: usize) {
    let mut total = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while total < expected {
        total += drain(relay).await;
        assert!(
            std::time::Instant::now() < deadline,
            "published {total} of {expected}"
        );
        if total < expected {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(total, expected);
    assert_eq!(drain(relay).await, 0, "nothing more to publish");
}

async fn register_many(app: &crate::support::TestApp, n: usize) -> Vec<Uuid> {
    let bus = CommandBus::<User>::new(app.pool.clone(), app.keys(), UserPolicy::default());
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    futures::stream::iter(ids.clone())
        .map(|id| {
            let bus = &bus;
            async move {
                bus.execute(
                    &id.to_string(),
                    UserCommand::RegisterUser {
                        user_id: id,
                        email: format!("{id}@example.com"),
                        password_hash: None,
                        display_name: None,
                        role: ROLE_USER.into(),
                        plan: "free".into(),
                        verified: false,
                        verification_nonce: "nonce".into(),
                        invitation: false,
                        now: chrono::Utc::now(),
                    },
                    &EventMetadata::system("test"),
                )
                .await
                .expect("registered")
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    ids
}

/// All events of the log sorted in log order, as (cursor, event id).
async fn log_order(pool: &sqlx::PgPool) -> Vec<(LogCursor, Uuid)> {
    eventstore::log::read_after(pool, LogCursor::START, 1_000_000)
        .await
        .expect("log")
        .into_iter()
        .map(|e| (e.cursor, e.event_id))
        .collect()
}

#[tokio::test]
async fn the_relay_waits_for_a_slow_transaction_and_then_publishes_all_1001_events_once_in_log_order(
) {
    let env = TestEnv::new();
    let app = env.spawn(Roles::only(&[Role::Projector])).await;
    app.bus.ensure_stream().await.expect("stream");
    let relay = relay(&app, 100);

    // A transaction appends an event and stays open...
    let mut slow = app.pool.begin().await.expect("begin");
    let slow_user = Uuid::now_v7();
    insert_registered(&mut slow, slow_user, "slow@example.com").await;

    // ...while 1,000 other events commit, each in its own transaction. (Straight inserts,
    // with synchronous_commit off on this connection, keep the slow transaction short: it
    // holds back every relay of the cluster, other tests' too.)
    let mut fast = app.pool.acquire().await.expect("connection");
    sqlx::query("set synchronous_commit to off")
        .execute(&mut *fast)
        .await
        .expect("set");
    for i in 0..1000 {
        insert_registered(&mut fast, Uuid::now_v7(), &format!("other{i}@example.com")).await;
    }
    drop(fast);
    assert_eq!(app.scalar_i64("select count(*) from events").await, 1000);

    // Nothing behind the open transaction may be published yet: publishing the later
    // events now would put the slow one behind the relay's checkpoint for ever.
    assert_eq!(drain(&relay).await, 0);
    assert_eq!(
        relay.checkpoint().await.expect("checkpoint"),
        LogCursor::START
    );

    slow.commit().await.expect("commit");
    drain_exactly(&relay, 1001).await;

    let published = app.stream_envelopes().await;
    assert_eq!(published.len(), 1001, "every event once");
    let ids: HashSet<Uuid> = published.iter().map(|(_, e)| e.event_id).collect();
    assert_eq!(ids.len(), 1001, "no event twice");
    // The stream's order is the log's order, (transaction_id, position); the slow
    // transaction started first, so its event leads although it committed last.
    let expected = log_order(&app.pool).await;
    let got: Vec<(LogCursor, Uuid)> = published
        .iter()
        .map(|(_, e)| (e.cursor, e.event_id))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(published[0].1.aggregate_id, slow_user.to_string());
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "cursors increase along the stream");

    // ...and the read models have every user.
    app.wait_for_projections("read models catch up").await;
    assert_eq!(app.scalar_i64("select count(*) from users").await, 1001);
    app.finish().await;
}

#[tokio::test]
async fn interleaved_multi_event_commits_are_applied_exactly_once_by_every_projection() {
    let env = TestEnv::new();
    let app = env.spawn(Roles::only(&[Role::Projector])).await;
    app.bus.ensure_stream().await.expect("stream");
    let relay = relay(&app, 100);

    // A appends a1; B appends b1 and commits; A appends a2 and commits.
    // Positions: a1 < b1 < a2. Log order: a1, a2, b1. A projection that kept only a
    // position would skip b1 after a2.
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let mut tx_a = app.pool.begin().await.expect("begin a");
    insert_registered(&mut tx_a, a, "a@example.com").await;
    let mut tx_b = app.pool.begin().await.expect("begin b");
    insert_registered(&mut tx_b, b, "b@example.com").await;
    tx_b.commit().await.expect("commit b");
    insert_event(
        &mut tx_a,
        a,
        2,
        "DuplicateRegistrationAttempted",
        serde_json::json!({"DuplicateRegistrationAttempted": {}}),
    )
    .await;
    tx_a.commit().await.expect("commit a");

    // (another test's open transaction elsewhere in the cluster can hold the readable
    // log back for a moment)
    let pool = app.pool.clone();
    let order = eventually(
        "the three events are readable",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                let o = log_order(&pool).await;
                (o.len() == 3).then_some(o)
            }
        },
    )
    .await;
    let positions: Vec<u64> = order.iter().map(|(c, _)| c.position).collect();
    assert!(
        positions[1] > positions[2],
        "the log's order is not the positions' order: {positions:?}"
    );

    drain_exactly(&relay, 3).await;
    app.wait_for_projections("both read models apply all three")
        .await;

    let all = users::all(&app.pool).await.expect("users");
    assert_eq!(all.len(), 2);
    let a_row = all.iter().find(|u| u.id == a).expect("a");
    assert_eq!(a_row.last_sequence, 2);
    let counts = event_stats::counts(&app.pool).await.expect("counts");
    let count_of = |t: &str| counts.iter().find(|c| c.event_type == t).map(|c| c.count);
    assert_eq!(count_of("UserRegistered"), Some(2));
    assert_eq!(count_of("DuplicateRegistrationAttempted"), Some(1));
    for cp in projections::checkpoint::all(&app.pool)
        .await
        .expect("checkpoints")
    {
        assert_eq!(cp.events_applied, 3, "{}", cp.name);
    }
    app.finish().await;
}

#[tokio::test]
async fn a_relay_that_crashed_between_publish_and_checkpoint_republishes_and_nothing_is_counted_twice(
) {
    let env = TestEnv::new();
    let app = env.spawn(Roles::only(&[Role::Projector])).await;
    app.bus.ensure_stream().await.expect("stream");
    register_many(&app, 10).await; // 20 events

    // Publish, then "crash" before the checkpoint moves.
    let crashed = relay(&app, 100);
    // (a transaction of a test running beside this one, in another database of the same
    // cluster, can hold the readable log back for a moment: wait for all 20)
    let pool = app.pool.clone();
    let batch = eventually(
        "all 20 events are readable",
        Duration::from_secs(30),
        || {
            let pool = pool.clone();
            async move {
                let b = eventstore::log::read_after(&pool, LogCursor::START, 100)
                    .await
                    .ok()?;
                (b.len() == 20).then_some(b)
            }
        },
    )
    .await;
    let (acked, duplicates, failure) = crashed.publish(&batch).await;
    assert_eq!((acked, duplicates, failure), (20, 0, None));
    assert_eq!(
        crashed.checkpoint().await.expect("checkpoint"),
        LogCursor::START
    );

    // The restarted relay publishes the same events again; JetStream drops them.
    let restarted = relay(&app, 100);
    let report = restarted.step().await.expect("step");
    assert_eq!(report.published, 20);
    assert_eq!(report.duplicates, 20);
    assert_eq!(app.stream_envelopes().await.len(), 20);

    app.wait_for_projections("read models catch up").await;
    assert_eq!(app.scalar_i64("select count(*) from users").await, 10);
    assert_eq!(
        app.scalar_i64("select sum(count)::bigint from event_type_counts")
            .await,
        20
    );
    app.finish().await;
}

#[tokio::test]
async fn a_redelivered_event_changes_nothing_and_a_rebuilt_read_model_equals_the_live_one() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;
    for i in 0..5 {
        assert_eq!(
            app.register(&format!("user{i}@example.com")).await.status(),
            202
        );
    }
    assert_eq!(app.register("user0@example.com").await.status(), 202); // a duplicate attempt
    app.wait_for_projections("read models catch up").await;
    let users_before = users::all(&app.pool).await.expect("users");
    let stats_before = event_stats::counts(&app.pool).await.expect("stats");

    // Put an already-applied event on the stream again under a new message id, as a
    // republish after the duplicate window would.
    let (_, first) = app
        .stream_envelopes()
        .await
        .into_iter()
        .next()
        .expect("a message");
    let subject = app
        .bus
        .config
        .subject(&first.aggregate_type, &first.event_type);
    let ack = app
        .bus
        .jetstream
        .send_publish(
            subject,
            PublishMessage::build()
                .payload(serde_json::to_vec(&first).expect("json").into())
                .message_id(Uuid::new_v4().to_string()),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    let pool = app.pool.clone();
    eventually(
        "every projector consumed the redelivery",
        Duration::from_secs(15),
        || {
            let pool = pool.clone();
            async move {
                let all = projections::checkpoint::all(&pool).await.ok()?;
                all.iter()
                    .all(|c| c.stream_sequence >= ack.sequence)
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(users::all(&app.pool).await.expect("users"), users_before);
    assert_eq!(
        event_stats::counts(&app.pool).await.expect("stats"),
        stats_before
    );

    // Rebuild both from the log: the same rows.
    for model in ReadModel::ALL {
        let report = rebuild(&app.pool, &app.keys(), model, |_, _| {})
            .await
            .expect("rebuild");
        assert_eq!(report.events_applied, 11); // 5 registrations of 2 events, 1 duplicate
    }
    assert_eq!(users::all(&app.pool).await.expect("users"), users_before);
    assert_eq!(
        event_stats::counts(&app.pool).await.expect("stats"),
        stats_before
    );

    // And the live pipeline goes on after a rebuild without counting anything twice.
    assert_eq!(app.register("after@example.com").await.status(), 202);
    app.wait_for_projections("read models catch up after the rebuild")
        .await;
    assert_eq!(app.scalar_i64("select count(*) from users").await, 6);
    assert_eq!(
        app.scalar_i64("select sum(count)::bigint from event_type_counts")
            .await,
        13
    );
    app.finish().await;
}

/// The projectors commit without waiting for the disk (`synchronous_commit = off`): a crash
/// of PostgreSQL may lose a read model's last commits after their messages were
/// acknowledged. This leaves the read model exactly as such a loss would (rows and
/// checkpoint back where they were) and checks that the next message makes the projector
/// take what is missing from the stream itself.
#[tokio::test]
async fn a_read_model_that_lost_its_last_commits_takes_the_missing_events_from_the_stream() {
    let env = TestEnv::new();
    let app = env.spawn_all().await;
    for i in 0..3 {
        assert_eq!(
            app.register(&format!("kept{i}@example.com")).await.status(),
            202
        );
    }
    app.wait_for_projections("the first three").await;
    let saved: (String, i64, i64, i64) = sqlx::query_as(
        "select transaction_id::text, position, stream_sequence, events_applied \
         from projection_checkpoints where name = 'users'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("checkpoint");
    for i in 0..2 {
        assert_eq!(
            app.register(&format!("lost{i}@example.com")).await.status(),
            202
        );
    }
    app.wait_for_projections("all five").await;

    // "The crash": the last commits of the users read model are gone, their messages acked.
    let mut tx = app.pool.begin().await.expect("begin");
    sqlx::query("delete from users where email like 'lost%'")
        .execute(&mut *tx)
        .await
        .expect("delete");
    sqlx::query(
        "update projection_checkpoints set transaction_id = $1::text::xid8, position = $2, \
         stream_sequence = $3, events_applied = $4 where name = 'users'",
    )
    .bind(&saved.0)
    .bind(saved.1)
    .bind(saved.2)
    .bind(saved.3)
    .execute(&mut *tx)
    .await
    .expect("checkpoint back");
    tx.commit().await.expect("commit");
    assert_eq!(app.scalar_i64("select count(*) from users").await, 3);

    // The next event arrives after a gap of four messages (two registrations).
    assert_eq!(app.register("next@example.com").await.status(), 202);
    app.wait_for_projections("the read model fills the gap")
        .await;
    let mut emails: Vec<String> = sqlx::query_scalar("select email from users order by email")
        .fetch_all(&app.pool)
        .await
        .expect("emails");
    emails.sort();
    assert_eq!(
        emails,
        [
            "kept0@example.com",
            "kept1@example.com",
            "kept2@example.com",
            "lost0@example.com",
            "lost1@example.com",
            "next@example.com"
        ]
    );
    let stream_last = app.stream_envelopes().await.len() as i64;
    assert_eq!(
        app.scalar_i64("select stream_sequence from projection_checkpoints where name = 'users'")
            .await,
        stream_last
    );
    app.finish().await;
}

/// A reader of some aggregate types (a rebuild) moves through the log in its order, past
/// events of other types, also where transaction ids change their number of digits (the
/// cursor's order is numeric, never the text's).
#[tokio::test]
async fn reading_the_log_by_type_moves_past_other_types_in_log_order() {
    let env = TestEnv::new();
    let app = env.spawn(Roles::only(&[Role::Api])).await;
    // transaction ids of the past (every one below the cluster's oldest running one)
    for (tx, aggregate_type, id) in [
        (98, "user", "u1"),
        (99, "meter", "m1"),
        (100, "meter", "m2"),
        (101, "user", "u2"),
        (1000, "meter", "m3"),
        (1001, "meter", "m4"),
    ] {
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata, transaction_id) values ($1, $2, 1, 'Test', '1.0', '{}', '{}', $3::text::xid8)",
        )
        .bind(aggregate_type)
        .bind(id)
        .bind(tx.to_string())
        .execute(&app.pool)
        .await
        .expect("insert");
    }
    let mut conn = app.pool.acquire().await.expect("conn");
    let mut cursor = LogCursor::START;
    let mut read = vec![];
    let mut steps = vec![];
    loop {
        let (events, last, scanned) =
            eventstore::log::read_after_of_types(&mut conn, cursor, 3, &["user"])
                .await
                .expect("read");
        let Some(last) = last else { break };
        assert!(last > cursor, "the cursor moves forward");
        read.extend(events.iter().map(|e| e.aggregate_id.clone()));
        steps.push((last.transaction_id, scanned));
        cursor = last;
    }
    assert_eq!(read, ["u1", "u2"]);
    assert_eq!(steps, [(100, 3), (1001, 3)]);
    app.finish().await;
}

#[tokio::test]
async fn a_checkpoint_moves_past_unread_events_only_from_where_it_is_and_never_back() {
    use projections::checkpoint::{self, advance_past};
    let env = TestEnv::new();
    let app = env.spawn(Roles::only(&[Role::Api])).await;
    let model = ReadModel::Uploads;
    let set = sqlx::query(
        "update projection_checkpoints set stream_sequence = 10, transaction_id = '100'::xid8, \
         position = 5, status = 'running' where name = $1",
    )
    .bind(model.name())
    .execute(&app.pool)
    .await
    .expect("set");
    assert_eq!(set.rows_affected(), 1);
    let at = |pool: sqlx::PgPool| async move {
        let cp = checkpoint::load(&pool, model)
            .await
            .expect("load")
            .expect("row");
        (cp.stream_sequence, cp.cursor)
    };
    // from a sequence the checkpoint is not at (another process moved it): nothing moves
    let refused = advance_past(&app.pool, model, 9, 12, LogCursor::new(100, 7))
        .await
        .expect("advance");
    assert!(!refused);
    assert_eq!(at(app.pool.clone()).await, (10, LogCursor::new(100, 5)));
    // from where it is: the sequence and the cursor move
    assert!(
        advance_past(&app.pool, model, 10, 12, LogCursor::new(100, 7))
            .await
            .expect("advance")
    );
    assert_eq!(at(app.pool.clone()).await, (12, LogCursor::new(100, 7)));
    // a cursor behind the stored one (a rebuild got further): the sequence moves, the cursor stays
    assert!(
        advance_past(&app.pool, model, 12, 13, LogCursor::new(100, 6))
            .await
            .expect("advance")
    );
    assert_eq!(at(app.pool.clone()).await, (13, LogCursor::new(100, 7)));
    // a failed read model stays where it stopped
    checkpoint::mark_failed(&app.pool, model, None, "test")
        .await
        .expect("fail");
    assert!(
        !advance_past(&app.pool, model, 13, 14, LogCursor::new(100, 9))
            .await
            .expect("advance")
    );
    assert_eq!(at(app.pool.clone()).await, (13, LogCursor::new(100, 7)));
    app.finish().await;
}

#[tokio::test]
async fn a_projector_transaction_locks_in_one_statement_commits_relaxed_and_notifies_its_cursor() {
    use projections::checkpoint::{self, lock, lock_relaxed};
    let env = TestEnv::new();
    let app = env.spawn(Roles::only(&[Role::Api])).await;
    let model = ReadModel::Uploads;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .expect("listener");
    listener
        .listen("chronicle_checkpoints")
        .await
        .expect("listen");
    async fn setting(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
        sqlx::query_scalar("select current_setting('synchronous_commit')")
            .fetch_one(conn)
            .await
    }
    // a missing row is made by the lock; the plain lock leaves commits synchronous
    sqlx::query("delete from projection_checkpoints where name = $1")
        .bind(model.name())
        .execute(&app.pool)
        .await
        .expect("delete");
    let mut tx = app.pool.begin().await.expect("begin");
    let made = lock(&mut tx, model).await.expect("lock");
    assert_eq!((made.stream_sequence, made.cursor), (0, LogCursor::START));
    assert_eq!(setting(&mut tx).await.expect("setting"), "on");
    tx.commit().await.expect("commit");
    // the projectors' lock turns the disk wait off for its own transaction only
    let mut conn = app.pool.acquire().await.expect("connection");
    let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
    let cp = lock_relaxed(&mut tx, model).await.expect("lock");
    assert_eq!(cp.status, checkpoint::RUNNING);
    assert_eq!(setting(&mut tx).await.expect("setting"), "off");
    checkpoint::advance(&mut tx, model, LogCursor::new(200, 3), 7, 2)
        .await
        .expect("advance");
    tx.commit().await.expect("commit");
    let note = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification in time")
        .expect("notification");
    assert_eq!(
        checkpoint::parse_notification(note.payload()),
        Some((model.name(), LogCursor::new(200, 3)))
    );
    let cp = checkpoint::load(&app.pool, model)
        .await
        .expect("load")
        .expect("row");
    assert_eq!(
        (cp.cursor, cp.stream_sequence, cp.events_applied),
        (LogCursor::new(200, 3), 7, 2)
    );
    // the connection the transaction ran on is back to synchronous commits
    assert_eq!(setting(&mut conn).await.expect("setting"), "on");
    drop(conn);
    app.finish().await;
}

#[tokio::test]
async fn a_rebuild_read_ahead_over_several_batches_sums_every_event_once() {
    // 3,600 usage records between 6 users' two events each, written straight into the log:
    // the rebuild's reader scans ahead in batches of 1,000 while the replay folds, and the
    // `users` rebuild moves past the usage rows (scanned without their JSON) batch after batch
    let env = TestEnv::new();
    let app = env.spawn(Roles::only(&[Role::Api])).await;
    let users: Vec<Uuid> = (0..6).map(|_| Uuid::now_v7()).collect();
    let mut rows: Vec<(String, String, i64, serde_json::Value)> = vec![];
    let mut expected: std::collections::BTreeMap<(String, String), (i64, i64)> = Default::default();
    for (i, user) in users.iter().enumerate() {
        rows.push(("user".into(), user.to_string(), 1, serde_json::json!({"UserRegistered": {
            "user_id": user, "email": format!("reader{i}@example.com"), "display_name": format!("Reader {i}"),
            "password_hash": null, "role": "user", "plan": "free"}})));
        for k in 0..600i64 {
            let day = if k % 2 == 0 {
                "2026-11-01"
            } else {
                "2026-11-02"
            };
            let amount = 1 + (k * 7 + i as i64) % 13;
            let sum = expected
                .entry((user.to_string(), day.to_owned()))
                .or_default();
            sum.0 += amount;
            sum.1 += 1;
            rows.push((
                "meter".into(),
                format!("{user}:{day}"),
                sum.1,
                serde_json::json!({"UsageRecorded": {"user_id": user, "day": day, "kind": "messages",
                    "amount": amount, "occurred_at": format!("{day}T12:00:00Z")}}),
            ));
        }
        rows.push((
            "user".into(),
            user.to_string(),
            2,
            serde_json::json!({"EmailVerified": {
            "method": "trusted", "verified_at": "2026-11-01T00:00:00Z"}}),
        ));
    }
    for chunk in rows.chunks(700) {
        let mut tx = app.pool.begin().await.expect("begin");
        for (aggregate_type, id, sequence, payload) in chunk {
            let event_type = payload
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .unwrap_or_default();
            sqlx::query(
                "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 values ($1, $2, $3, $4, '1.0', $5, '{}')",
            )
            .bind(aggregate_type)
            .bind(id)
            .bind(sequence)
            .bind(event_type)
            .bind(payload)
            .execute(&mut *tx)
            .await
            .expect("insert");
        }
        tx.commit().await.expect("commit");
    }
    let usage = rebuild(&app.pool, &app.keys(), ReadModel::Usage, |_, _| {})
        .await
        .expect("rebuild usage");
    assert_eq!(usage.events_applied, rows.len() as u64);
    let got: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "select user_id::text, day::text, total, records from usage_daily order by 1, 2",
    )
    .fetch_all(&app.pool)
    .await
    .expect("usage rows");
    let want: Vec<(String, String, i64, i64)> = expected
        .iter()
        .map(|((u, d), (t, r))| (u.clone(), d.clone(), *t, *r))
        .collect();
    assert_eq!(got, want);
    let users_rebuilt = rebuild(&app.pool, &app.keys(), ReadModel::Users, |_, _| {})
        .await
        .expect("rebuild users");
    assert_eq!(users_rebuilt.events_applied, 12);
    assert_eq!(
        users_rebuilt.cursor, usage.cursor,
        "both moved to the log's end"
    );
    let verified: i64 = sqlx::query_scalar("select count(*) from users where email_verified")
        .fetch_one(&app.pool)
        .await
        .expect("users");
    assert_eq!(verified, 6);
    app.finish().await;
}

#[tokio::test]
async fn an_active_relay_that_cannot_reach_nats_steps_aside_and_the_standby_relays() {
    use workers::lease::{Leases, DEFAULT_POLL};
    use workers::{BusConfig, EventBus};
    let env = TestEnv::new();
    let app = env.spawn(Roles::only(&[Role::Api])).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let relay = |bus: EventBus| {
        let leases = Leases::spawn(&app.pool, DEFAULT_POLL, stop.clone());
        let lease = leases.lease(&Relay::lease_name("default"));
        let relay =
            Relay::new(app.pool.clone(), bus, RelayConfig::default()).with_lease(lease.clone());
        (relay, lease)
    };
    // the first relay's NATS is a port nobody listens on; it takes the lease first
    let cut_off = EventBus::connect(BusConfig {
        servers: vec![format!("nats://127.0.0.1:{}", crate::support::free_port())],
        ..env.bus_config()
    })
    .await
    .expect("a client that keeps trying");
    let (first, first_lease) = relay(cut_off);
    tokio::spawn(first.run(stop.clone()));
    eventually(
        "the first relay holds the lease",
        Duration::from_secs(30),
        || {
            let held = first_lease.is_held();
            async move { held.then_some(()) }
        },
    )
    .await;
    let (second, second_lease) = relay(app.bus.clone());
    tokio::spawn(second.run(stop.clone()));
    assert_eq!(app.register("relayed@example.com").await.status(), 202);
    // past the first relay's patience (15 s without progress), the standby publishes
    eventually(
        "the standby relays the log",
        Duration::from_secs(60),
        || async {
            let relayed = app.bus.jetstream.get_stream(&env.stream).await.is_ok()
                && app
                    .stream_envelopes()
                    .await
                    .iter()
                    .any(|(_, e)| e.event_type == "UserRegistered");
            relayed.then_some(())
        },
    )
    .await;
    assert!(second_lease.is_held() && !first_lease.is_held());
    stop.cancel();
    app.finish().await;
}
