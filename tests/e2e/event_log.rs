//! The event log as a product: export over HTTP (pages, NDJSON, CSV) and from the CLI,
//! import into a fresh database with the same read models, the order of an export under a
//! slow transaction, `projections verify`, a rebuild with readers watching, and the
//! example consumer reading the stream from the start, a sequence and a time.

use std::collections::BTreeMap;
use std::time::Duration;

use aggregates::StreamEnvelope;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::admin::{admin_env, admin_token, chronicle};
use crate::auth::{login, signed_up, PASSWORD};
use crate::conversations::call;
use crate::pipeline::insert_registered;
use crate::support::{eventually, TestApp, TestEnv};

#[path = "../../examples/consumer.rs"]
#[allow(dead_code)]
mod consumer;

/// Users who sign in, record usage, talk, change their profile; one erases their account.
pub(crate) async fn workload(app: &TestApp, tag: &str, users: usize) {
    for n in 0..users {
        let email = format!("{tag}{n}@example.com");
        signed_up(app, &email).await;
        let (s, b) = login(app, &email, PASSWORD).await;
        assert_eq!(s, 200, "{b}");
        let t = b["data"]["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let (s, _) = call(
            app,
            Method::POST,
            "/api/v1/metrics",
            &t,
            Some(json!({"kind": "tokens", "amount": 10 + n})),
        )
        .await;
        assert_eq!(s, 202);
        let (s, c) = call(
            app,
            Method::POST,
            "/api/v1/conversations",
            &t,
            Some(json!({"title": format!("Notes of {email}")})),
        )
        .await;
        assert_eq!(s, 201, "{c}");
        let id = c["data"]["id"].as_str().expect("id").to_owned();
        let (s, _) = call(
            app,
            Method::POST,
            &format!("/api/v1/conversations/{id}/messages"),
            &t,
            Some(json!({"content": "hello"})),
        )
        .await;
        assert!(s == 201 || s == 202);
        let (s, _) = call(
            app,
            Method::PATCH,
            "/api/v1/users/me",
            &t,
            Some(json!({"display_name": format!("Person {n}")})),
        )
        .await;
        assert_eq!(s, 200);
        if n == 0 {
            let (s, b) = call(
                app,
                Method::DELETE,
                "/api/v1/users/me",
                &t,
                Some(json!({"password": PASSWORD})),
            )
            .await;
            assert_eq!(s, 204, "{b}");
        }
    }
}

/// The log's event ids in its order.
async fn log_ids(app: &TestApp) -> Vec<Uuid> {
    sqlx::query_scalar("select event_id from events order by transaction_id, position")
        .fetch_all(&app.pool)
        .await
        .expect("ids")
}

async fn get(app: &TestApp, token: &str, path: &str, accept: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(app.url(path))
        .bearer_auth(token)
        .header("accept", accept)
        .send()
        .await
        .expect("sent");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn envelopes(ndjson: &str) -> Vec<StreamEnvelope> {
    ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("an envelope per line"))
        .collect()
}

#[tokio::test]
async fn the_log_exports_in_order_as_pages_ndjson_and_csv_with_filters() {
    let app = admin_env().spawn_all().await;
    workload(&app, "exp", 3).await;
    let admin = admin_token(&app).await;
    let ids = log_ids(&app).await;

    // JSON pages, following `next`
    let mut paged = vec![];
    let mut after = String::new();
    loop {
        let (s, body) = get(
            &app,
            &admin,
            &format!("/api/v1/admin/events?limit=7&after={after}"),
            "application/json",
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let page: Value = serde_json::from_str(&body).expect("json");
        let items = page["data"]["items"].as_array().expect("items").clone();
        for i in &items {
            paged.push(
                i["event_id"]
                    .as_str()
                    .expect("id")
                    .parse::<Uuid>()
                    .expect("uuid"),
            );
        }
        after = page["data"]["next"].as_str().expect("next").to_owned();
        if !page["data"]["has_more"].as_bool().unwrap_or(false) {
            break;
        }
    }
    assert_eq!(paged, ids, "pages give the log in its order");

    // NDJSON: everything, personal values opened; sealed on request
    let (s, body) = get(&app, &admin, "/api/v1/admin/events", "application/x-ndjson").await;
    assert_eq!(s, 200);
    let all = envelopes(&body);
    let ndjson_len = body.len();
    assert_eq!(all.iter().map(|e| e.event_id).collect::<Vec<_>>(), ids);
    assert!(body.contains("exp1@example.com"), "opened");
    assert!(
        !body.contains("password_hash") && !body.contains("\"nonce\""),
        "secrets' derivatives are left out"
    );
    let (_, kept) = get(
        &app,
        &admin,
        "/api/v1/admin/events?secrets=keep&type=UserRegistered",
        "application/x-ndjson",
    )
    .await;
    assert!(kept.contains("password_hash"));
    assert!(!body.contains("enc:v1:"));
    assert!(
        !body.contains("exp0@example.com"),
        "the erased user's email is gone"
    );
    let (_, sealed) = get(
        &app,
        &admin,
        "/api/v1/admin/events?personal=sealed",
        "application/x-ndjson",
    )
    .await;
    assert!(sealed.contains("enc:v1:") && !sealed.contains("exp1@example.com"));
    assert_eq!(envelopes(&sealed).len(), ids.len());

    // filters
    let count = |sql: &'static str| app.scalar_i64(sql);
    let (_, body) = get(
        &app,
        &admin,
        "/api/v1/admin/events?type=UserRegistered,SessionStarted&limit=1000",
        "application/x-ndjson",
    )
    .await;
    assert_eq!(
        envelopes(&body).len() as i64,
        count(
            "select count(*) from events where event_type in ('UserRegistered', 'SessionStarted')"
        )
        .await
    );
    let (_, body) = get(
        &app,
        &admin,
        "/api/v1/admin/events?aggregate_type=meter",
        "application/x-ndjson",
    )
    .await;
    let meters = envelopes(&body);
    assert!(meters.iter().all(|e| e.aggregate_type == "meter"));
    assert_eq!(
        meters.len() as i64,
        count("select count(*) from events where aggregate_type = 'meter'").await
    );
    let user1 = all
        .iter()
        .find(|e| e.event_type == "UserRegistered" && e.payload.to_string().contains("exp1@"))
        .expect("exp1")
        .aggregate_id
        .clone();
    let (_, body) = get(
        &app,
        &admin,
        &format!("/api/v1/admin/events?actor={user1}"),
        "application/x-ndjson",
    )
    .await;
    let by_actor = envelopes(&body);
    assert!(
        !by_actor.is_empty()
            && by_actor
                .iter()
                .all(|e| e.metadata.actor_id.as_deref() == Some(user1.as_str()))
    );
    let (_, body) = get(
        &app,
        &admin,
        &format!("/api/v1/admin/events?aggregate_type=user&aggregate_id={user1}"),
        "application/x-ndjson",
    )
    .await;
    assert!(envelopes(&body).iter().all(|e| e.aggregate_id == user1));
    let middle = all[all.len() / 2].recorded_at;
    let since = middle.to_rfc3339().replace('+', "%2B");
    let (_, body) = get(
        &app,
        &admin,
        &format!("/api/v1/admin/events?since={since}"),
        "application/x-ndjson",
    )
    .await;
    assert_eq!(
        envelopes(&body).len(),
        all.iter().filter(|e| e.recorded_at >= middle).count()
    );
    let (_, body) = get(
        &app,
        &admin,
        "/api/v1/admin/events?limit=5",
        "application/x-ndjson",
    )
    .await;
    assert_eq!(envelopes(&body).len(), 5);

    // compressed (browsers always ask for it): the stream still ends cleanly
    let resp = reqwest::Client::new()
        .get(app.url("/api/v1/admin/events"))
        .bearer_auth(&admin)
        .header("accept", "application/x-ndjson")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        resp.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let gz = resp
        .bytes()
        .await
        .expect("the whole compressed body arrives");
    assert!(
        gz.len() > 20 && gz.len() < ndjson_len,
        "{} of {ndjson_len}",
        gz.len()
    );

    // CSV
    let (s, csv) = get(&app, &admin, "/api/v1/admin/events", "text/csv").await;
    assert_eq!(s, 200);
    assert!(csv.starts_with("cursor,event_id,recorded_at"));
    assert_eq!(
        csv.lines().filter(|l| l.starts_with("000")).count(),
        ids.len()
    );

    // bad input is a 4xx, never a 500
    for q in [
        "after=garbage",
        "limit=0",
        "limit=5000",
        "personal=maybe",
        "since=yesterday",
        "colour=red",
    ] {
        let (s, body) = get(
            &app,
            &admin,
            &format!("/api/v1/admin/events?{q}"),
            "application/json",
        )
        .await;
        assert!(s == 422 || s == 400, "{q}: {s} {body}");
    }
    app.finish().await;
}

#[tokio::test]
async fn an_export_during_a_slow_transaction_misses_nothing_and_repeats_nothing() {
    let app = admin_env().spawn_all().await;
    let admin = admin_token(&app).await;
    workload(&app, "slow", 1).await;
    // a transaction that appended an event and has not committed...
    let mut slow = app.pool.begin().await.expect("begin");
    insert_registered(&mut slow, Uuid::now_v7(), "late@example.com").await;
    // ...while others commit after it (with higher positions). Straight inserts: commands
    // would wait for read models, which the open transaction holds back.
    for n in 0..20 {
        let mut fast = app.pool.begin().await.expect("begin");
        insert_registered(&mut fast, Uuid::now_v7(), &format!("busy{n}@example.com")).await;
        fast.commit().await.expect("commit");
    }
    let (_, first) = get(&app, &admin, "/api/v1/admin/events", "application/x-ndjson").await;
    let first = envelopes(&first);
    assert!(
        !first
            .iter()
            .any(|e| e.payload.to_string().contains("late@")),
        "not committed yet"
    );
    slow.commit().await.expect("commit");
    let after = first.last().expect("some").cursor.to_string();
    let (_, rest) = get(
        &app,
        &admin,
        &format!("/api/v1/admin/events?after={after}"),
        "application/x-ndjson",
    )
    .await;
    let rest = envelopes(&rest);
    assert!(
        rest.iter().any(|e| e.payload.to_string().contains("late@")),
        "seen on the next read"
    );
    let exported: Vec<Uuid> = first
        .iter()
        .chain(rest.iter())
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        exported,
        log_ids(&app).await,
        "the two reads are the whole log, in order, once"
    );
    // the relay's order is the same: the stream holds the same ids in the same order
    app.wait_for_projections("relayed").await;
    let streamed: Vec<Uuid> = app
        .stream_envelopes()
        .await
        .into_iter()
        .map(|(_, e)| e.event_id)
        .collect();
    assert_eq!(streamed, exported);
    app.finish().await;
}

#[tokio::test]
async fn an_export_imported_into_a_fresh_database_replays_to_the_same_read_models() {
    let app = admin_env().spawn_all().await;
    workload(&app, "rep", 4).await;
    app.wait_for_projections("the workload").await;
    let file = app.env.data_dir.join("export.ndjson");
    std::fs::create_dir_all(&app.env.data_dir).expect("dir");
    let path = file.display().to_string();
    let (code, _, err) = chronicle(
        &app.env,
        &["events", "export", "--with-secrets", "--output", &path],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&file).expect("export");
    let total = app.scalar_i64("select count(*) from events").await;
    assert_eq!(text.lines().count() as i64, total);
    let (code, csv, _) = chronicle(
        &app.env,
        &[
            "events",
            "export",
            "--format",
            "csv",
            "--type",
            "UserRegistered",
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        csv.lines().count() as i64,
        1 + app
            .scalar_i64("select count(*) from events where event_type = 'UserRegistered'")
            .await
    );

    // a fresh database (its own keys), the export imported, its read models built
    let fresh = TestEnv::new();
    // an export that is sealed, or without secrets' derivatives, is refused before anything
    // is appended
    for (flags, why) in [
        (vec!["--sealed", "--with-secrets"], "sealed"),
        (vec![], "with-secrets"),
    ] {
        let other = app
            .env
            .data_dir
            .join(format!("export-{why}.ndjson"))
            .display()
            .to_string();
        let mut args = vec!["events", "export", "--output", other.as_str()];
        args.extend(flags);
        assert_eq!(chronicle(&app.env, &args).await.0, 0);
        let (code, _, err) = chronicle(&fresh, &["events", "import", &other]).await;
        assert_ne!(code, 0);
        assert!(err.contains(why), "{err}");
    }
    let (code, out, err) = chronicle(&fresh, &["events", "import", &path]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("imported {total} events; 4 email claims restored")),
        "{out}"
    );
    let copy = fresh
        .spawn(chronicle::Roles::only(&[
            chronicle::Role::Api,
            chronicle::Role::Relay,
            chronicle::Role::Projector,
        ]))
        .await;
    copy.wait_for_projections("the imported log").await;

    for table in [
        "users",
        "sessions",
        "usage_daily",
        "conversations",
        "messages",
        "uploads",
        "event_type_counts",
        "daily_activity",
        "daily_active_users",
    ] {
        let sql = format!(
            "select coalesce(string_agg(t::text, E'\\n' order by t::text), '') from {table} t"
        );
        let a: String = sqlx::query_scalar(&sql)
            .fetch_one(&app.pool)
            .await
            .expect("a");
        let b: String = sqlx::query_scalar(&sql)
            .fetch_one(&copy.pool)
            .await
            .expect("b");
        assert_eq!(a, b, "{table} differs after replaying the export");
    }
    assert!(
        app.scalar_i64("select count(*) from users where email like 'rep1@%'")
            .await
            == 1
    );
    // the copy's log holds the same events in the same order, sealed with its own keys
    let ids_a = log_ids(&app).await;
    let ids_b: Vec<Uuid> =
        sqlx::query_scalar("select event_id from events order by transaction_id, position")
            .fetch_all(&copy.pool)
            .await
            .expect("ids");
    assert_eq!(ids_a, ids_b);
    let plain: i64 = sqlx::query_scalar(
        "select count(*) from events where payload::text like '%rep1@example.com%'",
    )
    .fetch_one(&copy.pool)
    .await
    .expect("n");
    assert_eq!(plain, 0, "personal values are sealed again in the copy");
    // the copy works the same: a user of the source signs in there with their password
    let (s, b) = login(&copy, "rep1@example.com", PASSWORD).await;
    assert_eq!(s, 200, "{b}");
    // importing twice is refused
    let (code, _, err) = chronicle(&fresh, &["events", "import", &path]).await;
    assert_ne!(code, 0);
    assert!(err.contains("empty"), "{err}");
    copy.finish().await;
    app.finish().await;
}

#[tokio::test]
async fn verify_passes_after_a_mixed_workload_fails_on_a_tampered_row_and_rebuild_repairs_it() {
    let app = admin_env().spawn_all().await;
    workload(&app, "ver", 3).await;
    app.wait_for_projections("the workload").await;
    let (code, out, err) = chronicle(&app.env, &["projections", "verify", "--all"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every read model matches"), "{out}");
    for model in [
        "users",
        "sessions",
        "usage",
        "conversations",
        "uploads",
        "event_stats",
    ] {
        assert!(out.contains(model), "{model} verified:\n{out}");
    }
    // tamper with one row of one read model
    sqlx::query("update users set display_name = 'Mallory' where email = 'ver1@example.com'")
        .execute(&app.pool)
        .await
        .expect("tamper");
    let (code, out, _) = chronicle(&app.env, &["projections", "verify", "users", "--json"]).await;
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).expect("json");
    let users = &report[0]["tables"][0];
    assert_eq!(
        (
            users["table"].as_str(),
            users["only_live"].as_i64(),
            users["only_replayed"].as_i64()
        ),
        (Some("users"), Some(1), Some(1))
    );
    let (code, _, _) = chronicle(&app.env, &["projections", "verify", "sessions"]).await;
    assert_eq!(code, 0, "the other read models still match");

    // a rebuild swaps a replayed copy in while readers keep reading complete rows
    let expected = app.scalar_i64("select count(*) from users").await;
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let pool = app.pool.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut reads = vec![];
            while !stop.is_cancelled() {
                let n: i64 = sqlx::query_scalar("select count(*) from users")
                    .fetch_one(&pool)
                    .await
                    .expect("read");
                reads.push(n);
                tokio::task::yield_now().await;
            }
            reads
        })
    };
    let (code, _, err) = chronicle(&app.env, &["projections", "rebuild", "users"]).await;
    assert_eq!(code, 0, "{err}");
    stop.cancel();
    let reads = reader.await.expect("reader");
    assert!(
        reads.len() > 1 && reads.iter().all(|n| *n == expected),
        "readers saw {:?}",
        reads.iter().collect::<std::collections::BTreeSet<_>>()
    );
    let name: String =
        sqlx::query_scalar("select display_name from users where email = 'ver1@example.com'")
            .fetch_one(&app.pool)
            .await
            .expect("row");
    assert_eq!(name, "Person 1", "the rebuild repaired the row");
    let (code, _, _) = chronicle(&app.env, &["projections", "verify", "--all"]).await;
    assert_eq!(code, 0);
    // and the projector goes on after it
    workload(&app, "after", 1).await;
    app.wait_for_projections("after the rebuild").await;
    assert_eq!(
        app.scalar_i64("select count(*) from users where email = 'after0@example.com'")
            .await,
        0,
        "erased, so its email is gone"
    );
    assert_eq!(
        app.scalar_i64("select count(*) from users").await,
        expected + 1
    );
    app.finish().await;
}

pub(crate) async fn stream_holds(app: &TestApp, n: u64) {
    let stream_name = app.env.stream.clone();
    let js = app.bus.jetstream.clone();
    eventually("the stream holds the log", Duration::from_secs(30), || {
        let js = js.clone();
        let stream_name = stream_name.clone();
        async move {
            let mut stream = js.get_stream(&stream_name).await.ok()?;
            let messages = stream.info().await.ok()?.state.messages;
            (messages == n).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn the_example_consumer_counts_what_the_log_holds_from_the_start_a_sequence_and_a_time() {
    let app = admin_env().spawn_all().await;
    workload(&app, "early", 2).await;
    let early = app.scalar_i64("select count(*) from events").await as u64;
    stream_holds(&app, early).await;
    let boundary = time::OffsetDateTime::now_utc();
    // JetStream stamps messages when they arrive: everything before is stamped earlier
    tokio::time::sleep(Duration::from_millis(20)).await;
    workload(&app, "late", 2).await;
    let total = app.scalar_i64("select count(*) from events").await as u64;
    stream_holds(&app, total).await;

    let by_type: BTreeMap<String, u64> = sqlx::query_as::<_, (String, i64)>(
        "select event_type, count(*) from events group by event_type",
    )
    .fetch_all(&app.pool)
    .await
    .expect("counts")
    .into_iter()
    .map(|(t, n)| (t, n as u64))
    .collect();
    let nats = crate::support::nats_url();
    let idle = Duration::from_millis(500);
    let all = consumer::count(
        &nats,
        &app.env.stream,
        "from-start",
        consumer::From::Start,
        idle,
    )
    .await
    .expect("from start");
    assert_eq!(all.by_type, by_type);
    assert_eq!(all.total, total);
    let since = consumer::count(
        &nats,
        &app.env.stream,
        "from-time",
        consumer::From::Time(boundary),
        idle,
    )
    .await
    .expect("from time");
    assert_eq!(since.total, total - early);
    let from_seq = consumer::count(
        &nats,
        &app.env.stream,
        "from-seq",
        consumer::From::Sequence(early + 1),
        idle,
    )
    .await
    .expect("from seq");
    assert_eq!(from_seq.total, total - early);
    assert_eq!(since.last_cursor, all.last_cursor);
    // `chronicle events tail` follows the same stream
    let (code, out, err) = chronicle(
        &app.env,
        &["events", "tail", "--from-start", "--limit", "5", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let tailed = envelopes(&out);
    let first5: Vec<Uuid> = log_ids(&app).await.into_iter().take(5).collect();
    assert_eq!(
        tailed.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        first5
    );
    assert!(!out.contains("enc:v1:"), "personal values opened: {out}");
    let (code, out, _) = chronicle(
        &app.env,
        &[
            "events",
            "tail",
            "--from-start",
            "--limit",
            "2",
            "--type",
            "SessionStarted",
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("SessionStarted") && l.contains("Signed in"))
            .count(),
        2,
        "{out}"
    );
    // a durable consumer resumes where it stopped: nothing new, nothing again
    let again = consumer::count(
        &nats,
        &app.env.stream,
        "from-start",
        consumer::From::Start,
        idle,
    )
    .await
    .expect("again");
    assert_eq!(again.total, 0);
    app.finish().await;
}

#[tokio::test]
async fn the_log_orders_transaction_ids_as_numbers_not_as_text() {
    let app = TestEnv::new()
        .spawn(chronicle::Roles::only(&[chronicle::Role::Api]))
        .await;
    let user = Uuid::now_v7();
    // transaction ids 99 and 100 (both long finished): as text "100" sorts before "99"
    for (sequence, txid) in [(1i64, "99"), (2, "100")] {
        sqlx::query(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
             payload, metadata, transaction_id) values ('user', $1, $2, 'ProfileUpdated', '1.0', \
             '{\"ProfileUpdated\": {\"display_name\": null, \"locale\": null, \"timezone\": null}}', '{}', $3::text::xid8)",
        )
        .bind(user.to_string())
        .bind(sequence)
        .bind(txid)
        .execute(&app.pool)
        .await
        .expect("insert");
    }
    let first = eventstore::log::read_after(&app.pool, aggregates::LogCursor::START, 2)
        .await
        .expect("read");
    let txids: Vec<u64> = first.iter().map(|e| e.cursor.transaction_id).collect();
    assert_eq!(txids, [99, 100]);
    let filter = eventstore::log::HistoryFilter {
        newest_first: true,
        limit: 10,
        ..Default::default()
    };
    let (newest, _) = eventstore::log::subject_history(&app.pool, user, &filter)
        .await
        .expect("history");
    assert_eq!(newest[0].cursor.transaction_id, 100);
    let head = eventstore::log::head(&app.pool)
        .await
        .expect("head")
        .expect("some");
    assert_eq!(
        head.transaction_id, 100,
        "the head is the newest transaction"
    );
    app.finish().await;
}
