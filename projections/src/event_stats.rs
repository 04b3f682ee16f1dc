//! How many events of each type the log holds (`event_type_counts`), and activity per day
//! (`daily_activity`: sign-ups, sign-ins, active users). It spans every
//! aggregate, so it is guarded by the checkpoint pair alone: applying an event twice would
//! count it twice, which the tests check never happens.
//!
//! A batch is folded in memory ([`apply_all`]): counts per type, activity per day and the
//! day's active users summed or collected, then one statement per table.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use aggregates::session::SessionEvent;
use aggregates::user::UserEvent;
use aggregates::Event;
use chrono::{DateTime, NaiveDate, Utc};
use eventstore::StoredEvent;
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::ProjectionError;

/// Apply events folded: the same rows as applying them one by one (every change is a sum,
/// a maximum or a set), written with one statement per table.
///
/// Activity: sign-ups, sign-ins and active users per UTC day (`daily_activity`). A user is
/// active on a day when they caused an event that day as themselves.
pub async fn apply_all(
    conn: &mut PgConnection,
    events: &[(&StoredEvent, Option<Event>)],
) -> Result<(), ProjectionError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut counts: HashMap<(&str, &str), (i64, DateTime<Utc>)> = HashMap::new();
    // day -> (sign-ups, sign-ins, newly active users)
    let mut activity: BTreeMap<NaiveDate, (i64, i64, i64)> = BTreeMap::new();
    let mut active: BTreeSet<(NaiveDate, Uuid)> = BTreeSet::new();
    for (event, decoded) in events {
        let count = counts
            .entry((&event.aggregate_type, &event.event_type))
            .or_insert((0, event.recorded_at));
        count.0 += 1;
        count.1 = count.1.max(event.recorded_at);
        let day = event.recorded_at.date_naive();
        let (signups, logins) = decoded.as_ref().map_or((0, 0), signups_and_logins);
        if signups + logins > 0 {
            let a = activity.entry(day).or_default();
            a.0 += signups;
            a.1 += logins;
        }
        if let (Some(id), "user" | "admin") =
            (&event.metadata.actor_id, event.metadata.actor_role.as_str())
        {
            if let Ok(user) = id.parse::<Uuid>() {
                active.insert((day, user));
            }
        }
    }

    let mut types = Vec::with_capacity(counts.len());
    let mut names = Vec::with_capacity(counts.len());
    let mut ns = Vec::with_capacity(counts.len());
    let mut lasts = Vec::with_capacity(counts.len());
    for ((aggregate_type, event_type), (n, last)) in counts {
        types.push(aggregate_type.to_owned());
        names.push(event_type.to_owned());
        ns.push(n);
        lasts.push(last);
    }
    sqlx::query(
        "insert into event_type_counts (aggregate_type, event_type, count, last_recorded_at) \
         select * from unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[]) \
         on conflict (aggregate_type, event_type) do update \
         set count = event_type_counts.count + excluded.count, \
             last_recorded_at = greatest(event_type_counts.last_recorded_at, excluded.last_recorded_at)",
    )
    .bind(&types)
    .bind(&names)
    .bind(&ns)
    .bind(&lasts)
    .execute(&mut *conn)
    .await?;

    if !active.is_empty() {
        let (days, users): (Vec<NaiveDate>, Vec<Uuid>) = active.into_iter().unzip();
        let newly: Vec<NaiveDate> = sqlx::query_scalar(
            "insert into daily_active_users (day, user_id) \
             select * from unnest($1::date[], $2::uuid[]) on conflict do nothing returning day",
        )
        .bind(&days)
        .bind(&users)
        .fetch_all(&mut *conn)
        .await?;
        for day in newly {
            activity.entry(day).or_default().2 += 1;
        }
    }
    if !activity.is_empty() {
        let mut days = Vec::with_capacity(activity.len());
        let (mut signups, mut logins, mut actives) = (vec![], vec![], vec![]);
        for (day, (s, l, a)) in activity {
            days.push(day);
            signups.push(s);
            logins.push(l);
            actives.push(a);
        }
        sqlx::query(
            "insert into daily_activity (day, signups, logins, active_users) \
             select * from unnest($1::date[], $2::bigint[], $3::bigint[], $4::bigint[]) \
             on conflict (day) do update set signups = daily_activity.signups + excluded.signups, \
             logins = daily_activity.logins + excluded.logins, \
             active_users = daily_activity.active_users + excluded.active_users",
        )
        .bind(&days)
        .bind(&signups)
        .bind(&logins)
        .bind(&actives)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// What an event adds to its day's activity: (sign-ups, sign-ins).
fn signups_and_logins(event: &Event) -> (i64, i64) {
    match event {
        Event::User(UserEvent::UserRegistered { .. }) => (1, 0),
        Event::User(
            UserEvent::DuplicateRegistrationAttempted { .. }
            | UserEvent::EmailVerificationRequested { .. }
            | UserEvent::EmailVerificationCodeRejected { .. }
            | UserEvent::EmailVerified { .. }
            | UserEvent::FailedLoginsCleared { .. }
            | UserEvent::LoginFailed { .. }
            | UserEvent::PasswordResetRequested { .. }
            | UserEvent::PasswordResetCodeRejected { .. }
            | UserEvent::PasswordReset { .. }
            | UserEvent::PasswordChanged { .. }
            | UserEvent::ProfileUpdated { .. }
            | UserEvent::AvatarChanged { .. }
            | UserEvent::PlanChanged { .. }
            | UserEvent::RoleChanged { .. }
            | UserEvent::UserDeactivated { .. }
            | UserEvent::UserReactivated {}
            | UserEvent::EmailChanged { .. }
            | UserEvent::UserErased { .. },
        ) => (0, 0),
        Event::Session(SessionEvent::SessionStarted { .. }) => (0, 1),
        Event::Session(
            SessionEvent::RefreshTokenRotated { .. }
            | SessionEvent::RefreshTokenReuseDetected { .. }
            | SessionEvent::SessionRevoked { .. },
        ) => (0, 0),
        // other aggregates' events are neither sign-ups nor sign-ins, whatever they are
        Event::Meter(_)
        | Event::Conversation(_)
        | Event::Upload(_)
        | Event::ApiKey(_)
        | Event::EmailProbe(_) => (0, 0),
    }
}

pub async fn clear(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for table in ["event_type_counts", "daily_activity", "daily_active_users"] {
        sqlx::query(&format!("delete from {table}"))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Activity on one UTC day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DailyActivity {
    pub day: NaiveDate,
    pub signups: i64,
    pub logins: i64,
    pub active_users: i64,
}

/// Activity per day from `since` (inclusive), oldest first.
pub async fn activity_since<'e>(
    db: impl PgExecutor<'e>,
    since: NaiveDate,
) -> Result<Vec<DailyActivity>, sqlx::Error> {
    sqlx::query_as(
        "select day, signups, logins, active_users from daily_activity where day >= $1 order by day",
    )
    .bind(since)
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventTypeCount {
    pub aggregate_type: String,
    pub event_type: String,
    pub count: i64,
    pub last_recorded_at: DateTime<Utc>,
}

pub async fn counts<'e>(db: impl PgExecutor<'e>) -> Result<Vec<EventTypeCount>, sqlx::Error> {
    sqlx::query_as(
        "select aggregate_type, event_type, count, last_recorded_at from event_type_counts \
         order by aggregate_type, event_type",
    )
    .fetch_all(db)
    .await
}
