//! Leases: which process does a job that only one may do at a time (relaying the log,
//! applying one read model).
//!
//! A lease is a PostgreSQL session advisory lock named after the job. Each process keeps
//! **one** connection of its own for all its leases (not one of the pool's, so a busy pool
//! never delays a takeover). A small loop on it, every `poll` (250 ms ± 25 %):
//! - tries, in one statement, every lease it does not hold (`pg_try_advisory_lock`, which
//!   never waits, so standbys never queue on PostgreSQL: no thundering herd when the holder
//!   dies, just one cheap statement per standby per tick);
//! - otherwise checks that its connection is alive (`select 1`): a lease lives exactly as
//!   long as its session, so a dead connection means every lease of this process is gone.
//!
//! When a process dies, PostgreSQL ends its session at once (the socket closes) and frees
//! its locks; a standby holds them within one poll. A process cut off from PostgreSQL
//! notices within one poll (or a 2 s statement timeout) and stops its jobs; until then two
//! holders can overlap for a moment, which the jobs tolerate (the relay republishes under
//! the same message ids; a projector's batches lock its checkpoint row and skip what is
//! applied).
//!
//! **Groups** spread leases over processes: the read models' projectors are one group. A
//! process in a group holds a member lock of its own (the two-key form of advisory locks,
//! the group's hash and a random number), so every process can count the group's live
//! members in `pg_locks`. With `M` leases and `P` members, a process takes leases only
//! while it holds fewer than its fair share `ceil(M / P)`, and gives back (unlocks) what it
//! holds beyond it (while members want different numbers of leases, as in a roll that adds
//! one, the share is all a process wants and nothing is given back): a second projector process started beside a first ends up with half
//! the read models within a few polls, and when one dies the other takes its share back.
//!
//! A [`Lease`] says whether it is held; [`while_held`] runs a job while it is and stops the
//! job when it is lost. A lease shows that its process lives and reaches PostgreSQL, not
//! that its job works: a job that cannot make progress for [`STUCK_AFTER`] (a relay whose
//! NATS is away while PostgreSQL is not) ends with [`JobEnd::Stuck`], and its process
//! **steps aside**: it gives the lease back and does not take it again for [`STEP_ASIDE`],
//! so a standby that may be better placed takes over.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::backoff::{rand_below, Backoff};

mod job;

pub use job::{while_held, JobEnd, Patience, STEP_ASIDE, STUCK_AFTER};

/// How often a process looks at its leases.
pub const DEFAULT_POLL: Duration = Duration::from_millis(250);

/// One lease of this process.
#[derive(Clone)]
pub struct Lease {
    name: String,
    held: watch::Receiver<bool>,
    leases: Leases,
}

impl Lease {
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Give the lease back and leave it to others for `pause`.
    pub fn step_aside(&self, pause: Duration) {
        if let Ok(mut paused) = self.leases.paused.lock() {
            paused.insert(self.name.clone(), std::time::Instant::now() + pause);
        }
        self.leases.added.notify_one();
    }
}

/// The longest a lease statement may take before the connection counts as lost.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);

/// A lease as the loop sees it at a tick: (name, group, held).
type Seen = (String, Option<String>, bool);

struct Wanted {
    name: String,
    /// The group whose leases are spread over its members, if any.
    group: Option<String>,
    held: watch::Sender<bool>,
}

/// The leases of one process.
#[derive(Clone)]
pub struct Leases {
    wanted: Arc<Mutex<Vec<Wanted>>>,
    /// Tells the loop a lease was added or stepped away from (so it acts at once).
    added: Arc<tokio::sync::Notify>,
    /// Leases this process stepped aside from, and until when.
    paused: Arc<Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

impl Leases {
    /// Start the loop on a connection of its own to `pool`'s database; it ends (and frees
    /// every lease) at `stop`.
    pub fn spawn(pool: &PgPool, poll: Duration, stop: CancellationToken) -> Self {
        let leases = Self {
            wanted: Arc::default(),
            added: Arc::default(),
            paused: Arc::default(),
        };
        let options = (*pool.connect_options()).clone();
        tokio::spawn(leases.clone().keep(options, poll, stop));
        leases
    }

    /// The lease on `name` (tried from the next poll on).
    pub fn lease(&self, name: &str) -> Lease {
        self.want(name, None)
    }

    /// The lease on `name`, one of `group`'s: spread over the processes in the group.
    pub fn lease_in(&self, group: &str, name: &str) -> Lease {
        self.want(name, Some(group))
    }

    fn want(&self, name: &str, group: Option<&str>) -> Lease {
        let (held, receiver) = watch::channel(false);
        metrics::gauge!("chronicle_lease_held", "lease" => name.to_string()).set(0.0);
        if let Ok(mut wanted) = self.wanted.lock() {
            wanted.push(Wanted {
                name: name.to_string(),
                group: group.map(str::to_string),
                held,
            });
        }
        self.added.notify_one();
        Lease {
            name: name.to_string(),
            held: receiver,
            leases: self.clone(),
        }
    }

    fn set(&self, f: impl Fn(&Wanted) -> bool) {
        if let Ok(wanted) = self.wanted.lock() {
            for w in wanted.iter() {
                let now = f(w);
                if w.held
                    .send_if_modified(|held| std::mem::replace(held, now) != now)
                {
                    metrics::gauge!("chronicle_lease_held", "lease" => w.name.clone())
                        .set(if now { 1.0 } else { 0.0 });
                }
            }
        }
    }

    /// (name, group, held) of every lease wanted, and those stepped aside from for now.
    fn snapshot(&self) -> (Vec<Seen>, Vec<String>) {
        let wanted = self
            .wanted
            .lock()
            .map(|w| {
                w.iter()
                    .map(|w| (w.name.clone(), w.group.clone(), *w.held.borrow()))
                    .collect()
            })
            .unwrap_or_default();
        let now = std::time::Instant::now();
        let paused = self
            .paused
            .lock()
            .map(|mut p| {
                p.retain(|_, until| *until > now);
                p.keys().cloned().collect()
            })
            .unwrap_or_default();
        (wanted, paused)
    }

    async fn keep(self, options: PgConnectOptions, poll: Duration, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        while !stop.is_cancelled() {
            let connected = tokio::select! {
                _ = stop.cancelled() => break,
                c = bounded(PgConnection::connect_with(&options)) => c,
            };
            let mut conn = match connected {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "Leases: cannot reach PostgreSQL");
                    self.pause(&mut backoff, &stop).await;
                    continue;
                }
            };
            backoff.reset();
            match self.hold(&mut conn, poll, &stop).await {
                Ok(()) => {
                    // stopping: give every lease back at once rather than when the
                    // connection closes
                    let _ =
                        bounded(sqlx::query("select pg_advisory_unlock_all()").execute(&mut conn))
                            .await;
                    let _ = conn.close().await;
                    break;
                }
                Err(e) => {
                    self.set(|_| false);
                    tracing::warn!(error = %e, "Leases lost with their connection; reconnecting");
                    self.pause(&mut backoff, &stop).await;
                }
            }
        }
        self.set(|_| false);
    }

    async fn pause(&self, backoff: &mut Backoff, stop: &CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }

    /// Poll on `conn` until `stop` (`Ok`) or until the connection fails (`Err`: every
    /// lease is lost).
    async fn hold(
        &self,
        conn: &mut PgConnection,
        poll: Duration,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        // groups joined on this connection, under a member number drawn for it (a session
        // of ours that PostgreSQL has not noticed is dead yet may still hold the last one)
        let mut joined: Vec<(String, i32)> = vec![];
        let mut member = fresh_member();
        loop {
            let (wanted, paused) = self.snapshot();
            // a lease stepped aside from counts as held (it is not tried) until given back
            let as_planned: Vec<Seen> = wanted
                .iter()
                .map(|(n, g, held)| (n.clone(), g.clone(), *held || paused.contains(n)))
                .collect();
            let (to_try, mut to_give_back) = self
                .plan(conn, &as_planned, &mut joined, &mut member)
                .await?;
            for (name, _, held) in &wanted {
                if *held && paused.contains(name) && !to_give_back.contains(name) {
                    tracing::warn!(lease = %name, "Stepping aside: the job cannot work here; another process may take it");
                    to_give_back.push(name.clone());
                }
            }
            if !to_give_back.is_empty() {
                let released: Vec<String> = bounded(
                    sqlx::query_scalar(
                        "select name from unnest($1::text[]) as name \
                         where pg_advisory_unlock(hashtextextended(name, 0))",
                    )
                    .bind(&to_give_back)
                    .fetch_all(&mut *conn),
                )
                .await?;
                for name in &released {
                    tracing::info!(lease = %name, "Lease given back: another process takes its share");
                }
                self.set(|w| *w.held.borrow() && !released.contains(&w.name));
            }
            if to_try.is_empty() {
                bounded(sqlx::query("select 1").execute(&mut *conn)).await?;
            }
            for (names, room) in to_try {
                // tried in order until `room` are taken: the LIMIT stops the scan, so no
                // lock is taken beyond it
                let won: Vec<String> = bounded(
                    sqlx::query_scalar(
                        "select name from unnest($1::text[]) as name \
                         where pg_try_advisory_lock(hashtextextended(name, 0)) limit $2",
                    )
                    .bind(&names)
                    .bind(room as i64)
                    .fetch_all(&mut *conn),
                )
                .await?;
                for name in &won {
                    tracing::info!(lease = %name, "Lease taken: this process is active");
                }
                self.set(|w| *w.held.borrow() || won.contains(&w.name));
            }
            let quarter = (poll.as_millis() as u64 / 4).max(1);
            let wait = poll - Duration::from_millis(quarter)
                + Duration::from_millis(rand_below(2 * quarter));
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = self.added.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Which leases to try now (lists, each with how many of it to take at most) and which
    /// to give back: every missing lease of no group; in a group, as many missing ones as
    /// bring this process up to its fair share, or the ones it holds beyond it.
    async fn plan(
        &self,
        conn: &mut PgConnection,
        wanted: &[Seen],
        joined: &mut Vec<(String, i32)>,
        member: &mut i32,
    ) -> anyhow::Result<(Vec<(Vec<String>, usize)>, Vec<String>)> {
        let alone: Vec<String> = wanted
            .iter()
            .filter(|(_, group, held)| group.is_none() && !held)
            .map(|(name, _, _)| name.clone())
            .collect();
        let mut to_try = vec![];
        if !alone.is_empty() {
            to_try.push((alone.clone(), alone.len()));
        }
        let mut to_give_back = vec![];
        let mut groups: Vec<&String> = wanted.iter().filter_map(|(_, g, _)| g.as_ref()).collect();
        groups.sort();
        groups.dedup();
        for group in groups {
            let mine: Vec<&Seen> = wanted
                .iter()
                .filter(|(_, g, _)| g.as_ref() == Some(group))
                .collect();
            // the member lock's second key: how many of the group's leases this process
            // wants (high bits) and its member number (low 24 bits), so that every member
            // sees whether all want the same leases
            let key = member_key(mine.len(), *member);
            let at = joined.iter().position(|(g, _)| g == group);
            if at.is_some_and(|at| joined[at].1 != key) {
                // it wants another number of leases now: join again under the new key
                if let Some(at) = at {
                    let (_, old) = joined.remove(at);
                    bounded(
                        sqlx::query("select pg_advisory_unlock(hashtext($1), $2)")
                            .bind(group)
                            .bind(old)
                            .execute(&mut *conn),
                    )
                    .await?;
                }
            }
            if !joined.iter().any(|(g, _)| g == group) {
                // never waits: a number taken (by another process, or by a dead session
                // of this one) is drawn again next poll
                let got: bool = bounded(
                    sqlx::query_scalar("select pg_try_advisory_lock(hashtext($1), $2)")
                        .bind(group)
                        .bind(key)
                        .fetch_one(&mut *conn),
                )
                .await?;
                if !got {
                    *member = fresh_member();
                    continue; // not a member yet: take none of the group's leases
                }
                joined.push((group.clone(), key));
            }
            let members: Vec<i64> = bounded(
                sqlx::query_scalar(
                    "select objid::bigint from pg_locks \
                     where locktype = 'advisory' and objsubid = 2 and granted \
                       and database = (select oid from pg_database where datname = current_database()) \
                       and classid = (hashtext($1)::bigint & 4294967295)::oid",
                )
                .bind(group)
                .fetch_all(&mut *conn),
            )
            .await?;
            let fair = fair_share(mine.len(), &members);
            let (held, missing): (Vec<_>, Vec<_>) =
                mine.into_iter().partition(|(_, _, held)| *held);
            if held.len() > fair {
                // give back the last ones, so that who keeps what stays predictable
                let mut names: Vec<String> = held.iter().map(|(n, _, _)| n.clone()).collect();
                names.sort();
                to_give_back.extend(names.split_off(fair));
            } else {
                // start at a different lease in each process, so two that start together
                // rarely reach for the same ones
                let room = fair - held.len();
                let offset = member.unsigned_abs() as usize % missing.len().max(1);
                let mut names: Vec<String> = missing.iter().map(|(n, _, _)| n.clone()).collect();
                names.rotate_left(offset);
                if room > 0 && !names.is_empty() {
                    to_try.push((names, room));
                }
            }
        }
        Ok((to_try, to_give_back))
    }
}

/// A member number for a process's groups.
fn fresh_member() -> i32 {
    (rand_below(1 << 24) as i32 ^ std::process::id() as i32) & 0x00FF_FFFF
}

/// A member lock's second key: `wanted` (up to 127) in the high bits, `member` below.
fn member_key(wanted: usize, member: i32) -> i32 {
    ((wanted.min(127) as i32) << 24) | (member & 0x00FF_FFFF)
}

/// How many of `wanted` leases a process may hold, given the member keys of the group's
/// live members (its own among them): `ceil(wanted / members)` when every member wants as
/// many leases; all it wants when they differ (a roll that adds a lease), because a share
/// counted from different numbers could leave a lease that only some want with nobody.
fn fair_share(wanted: usize, members: &[i64]) -> usize {
    let wants = |key: &i64| (key >> 24) & 0x7F;
    let all_alike = members
        .first()
        .is_none_or(|first| members.iter().all(|k| wants(k) == wants(first)));
    if all_alike {
        wanted.div_ceil(members.len().max(1))
    } else {
        wanted
    }
}

/// A lease statement, bounded by [`STATEMENT_TIMEOUT`]: one that takes longer counts as a
/// lost connection.
async fn bounded<T, E: Into<anyhow::Error>>(
    statement: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(STATEMENT_TIMEOUT, statement)
        .await
        .map_err(|_| anyhow::anyhow!("PostgreSQL did not answer within {STATEMENT_TIMEOUT:?}"))?
        .map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_fair_when_members_want_alike_and_whole_when_they_do_not() {
        let key = |wanted, member| i64::from(member_key(wanted, member) as u32);
        assert_eq!(fair_share(6, &[key(6, 1)]), 6);
        assert_eq!(fair_share(6, &[key(6, 1), key(6, 2)]), 3);
        assert_eq!(
            fair_share(6, &[key(6, 1), key(6, 2), key(6, 3), key(6, 4)]),
            2
        );
        assert_eq!(
            fair_share(7, &[key(6, 1), key(7, 2)]),
            7,
            "a roll adding a lease"
        );
        assert_eq!(fair_share(6, &[]), 6);
        // the member number never reaches the count's bits
        assert_eq!(member_key(6, -1) >> 24, 6);
        assert!(fresh_member() < 1 << 24 && fresh_member() >= 0);
    }
}
