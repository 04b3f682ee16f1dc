//! Password hashing with argon2id (OWASP parameters: 9 MiB, 4 passes, 1 lane).
//!
//! OWASP's Password Storage Cheat Sheet lists five argon2id settings that "provide an
//! equal level of defense" and differ only in trading memory for passes (46 MiB × 1,
//! 19 MiB × 2, 12 MiB × 3, 9 MiB × 4, 7 MiB × 5). We hash with 9 MiB × 4: the same CPU per
//! hash as 19 MiB × 2 (within a few percent, measured in BENCHMARKS.md), half the memory a
//! hashing thread holds, which is what keeps a server under 64 MiB while it signs people
//! in on every core. Hashes made with other parameters (19 MiB × 2 before 2026-12-04)
//! carry them in their PHC string and verify as they are.
//!
//! Hashing costs tens of milliseconds of CPU and 9 MiB of memory, so it runs on a pool of
//! its own: `max_concurrent` threads, each with one argon2 memory area allocated on its
//! first job and reused for every later one. A burst of logins waits in the queue; it
//! cannot starve the async runtime, and the memory hashing holds is fixed at
//! `max_concurrent` × 9 MiB. (Before: `spawn_blocking` allocated and freed an area per
//! hash on whichever of the blocking pool's threads ran it, and glibc kept those areas in
//! per-thread arenas: ~500 MiB resident after a login benchmark.)

use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the hashing task was lost")]
    Join,
}

/// The parameters every new hash gets (OWASP: m=9216 KiB, t=4, p=1), in KiB.
pub const M_COST: u32 = 9_216;
/// Passes over the memory.
pub const T_COST: u32 = 4;
/// Lanes.
pub const P_COST: u32 = 1;
const OUTPUT_LEN: usize = 32;

enum Job {
    Hash {
        password: String,
        reply: oneshot::Sender<Result<String, PasswordError>>,
    },
    Verify {
        password: String,
        phc: String,
        reply: oneshot::Sender<bool>,
    },
}

/// A handle on the hashing pool (cheap to clone; the threads end with the last handle).
#[derive(Clone)]
pub struct PasswordHasher {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

fn argon2(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn default_params() -> Params {
    Params::new(M_COST, T_COST, P_COST, Some(OUTPUT_LEN)).unwrap_or_default()
}

/// One pool thread: its memory area, reused by every job.
struct Worker {
    blocks: Vec<Block>,
}

impl Worker {
    /// The memory for `params`: this thread's own area when the size matches (every hash
    /// we make), else a temporary one (a hash made with other parameters).
    fn hash_into(
        &mut self,
        params: Params,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> argon2::Result<()> {
        let needed = params.block_count();
        let hasher = argon2(params);
        if needed == M_COST as usize {
            if self.blocks.len() != needed {
                self.blocks = vec![Block::default(); needed];
            }
            hasher.hash_password_into_with_memory(password, salt, out, &mut self.blocks)
        } else {
            hasher.hash_password_into_with_memory(
                password,
                salt,
                out,
                vec![Block::default(); needed],
            )
        }
    }

    fn hash(&mut self, password: &str) -> Result<String, PasswordError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut raw_salt = [0u8; 64];
        let raw_salt = salt
            .decode_b64(&mut raw_salt)
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        let mut out = [0u8; OUTPUT_LEN];
        self.hash_into(default_params(), password.as_bytes(), raw_salt, &mut out)
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        let output = Output::new(&out).map_err(|e| PasswordError::Hash(e.to_string()))?;
        Ok(format!(
            "$argon2id$v=19$m={M_COST},t={T_COST},p={P_COST}${}${output}",
            salt.as_str()
        ))
    }

    fn verify(&mut self, password: &str, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return false;
        }
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        if parsed
            .version
            .is_some_and(|v| v != u32::from(Version::V0x13))
        {
            return false;
        }
        let mut raw_salt = [0u8; 64];
        let Ok(raw_salt) = salt.decode_b64(&mut raw_salt) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        if self
            .hash_into(params, password.as_bytes(), raw_salt, &mut out)
            .is_err()
        {
            return false;
        }
        // `Output`'s equality is constant-time
        Output::new(&out).is_ok_and(|computed| computed == expected)
    }

    fn run(mut self, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
        loop {
            let job = match jobs.lock() {
                Ok(mut queue) => queue.blocking_recv(),
                Err(_) => None,
            };
            match job {
                Some(Job::Hash { password, reply }) => {
                    let _ = reply.send(self.hash(&password));
                }
                Some(Job::Verify {
                    password,
                    phc,
                    reply,
                }) => {
                    let _ = reply.send(self.verify(&password, &phc));
                }
                // every handle is gone
                None => return,
            }
        }
    }
}

/// Lower this thread's CPU priority (nice 10): with every core hashing, the async runtime's
/// threads (nice 0) still win the CPU whenever they wake, so cheap requests keep their
/// latency during a login storm, and hashing still gets every cycle nobody else wants.
/// The thread is named by its id from `/proc/thread-self` (no unsafe code); `renice`
/// changes that one thread. Best effort: without `renice` the pool runs at normal priority.
fn lower_priority() {
    let tid = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    if let Some(tid) = tid {
        let _ = std::process::Command::new("renice")
            .args(["-n", "10", "-p", &tid])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl PasswordHasher {
    /// A pool of `max_concurrent` hashing threads (at least one).
    pub fn new(max_concurrent: usize) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..max_concurrent.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    lower_priority();
                    Worker { blocks: vec![] }.run(rx)
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Self { jobs: tx }
    }

    /// A PHC string (`$argon2id$v=19$m=9216,t=4,p=1$...`).
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Hash { password, reply })
            .await
            .map_err(|_| PasswordError::Join)?;
        answer.await.map_err(|_| PasswordError::Join)?
    }

    /// Whether `password` matches `phc`. A malformed hash never matches.
    pub async fn verify(&self, password: String, phc: String) -> Result<bool, PasswordError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Verify {
                password,
                phc,
                reply,
            })
            .await
            .map_err(|_| PasswordError::Join)?;
        answer.await.map_err(|_| PasswordError::Join)
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::PasswordVerifier;

    use super::*;

    #[tokio::test]
    async fn hashes_are_standard_phc_strings_that_verify_both_ways() {
        let pool = PasswordHasher::new(2);
        let phc = pool
            .hash("correct horse battery".into())
            .await
            .expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=9216,t=4,p=1$"), "{phc}");
        // the argon2 crate's own verifier accepts ours
        let parsed = PasswordHash::new(&phc).expect("PHC");
        assert!(argon2(default_params())
            .verify_password(b"correct horse battery", &parsed)
            .is_ok());
        assert!(pool
            .verify("correct horse battery".into(), phc.clone())
            .await
            .expect("verify"));
        assert!(!pool
            .verify("correct horse batterz".into(), phc.clone())
            .await
            .expect("verify"));
        // and ours accepts a hash the crate made, with other parameters too
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::generate(&mut OsRng);
        let other = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8_192, 1, 1, None).expect("params"),
        )
        .hash_password(b"pw", &salt)
        .expect("hash")
        .to_string();
        assert!(pool.verify("pw".into(), other.clone()).await.expect("v"));
        assert!(!pool.verify("px".into(), other).await.expect("v"));
        // a hash stored before 2026-12-04, at 19 MiB × 2
        let before = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(19_456, 2, 1, Some(OUTPUT_LEN)).expect("params"),
        )
        .hash_password(b"pw", &salt)
        .expect("hash")
        .to_string();
        assert!(
            before.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{before}"
        );
        assert!(pool.verify("pw".into(), before.clone()).await.expect("v"));
        assert!(!pool.verify("px".into(), before).await.expect("v"));
        for bad in [
            "",
            "$argon2id$",
            "plain",
            "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
        ] {
            assert!(
                !pool.verify("pw".into(), bad.into()).await.expect("v"),
                "{bad}"
            );
        }
    }

    /// The nice value of each of this process's hashing threads.
    fn hashing_threads_nice() -> Vec<i64> {
        let mut nice = vec![];
        for task in std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("argon2-") {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // after "(comm) ": the state is field 3 of stat(5), nice field 19
            let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
            if let Some(n) = after
                .split_whitespace()
                .nth(16)
                .and_then(|v| v.parse().ok())
            {
                nice.push(n);
            }
        }
        nice
    }

    #[tokio::test]
    async fn hashing_threads_run_at_a_lower_priority_than_the_runtime() {
        let pool = PasswordHasher::new(2);
        pool.hash("warm up".into()).await.expect("hash");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let nice = hashing_threads_nice();
            if nice.len() >= 2 && nice.iter().all(|n| *n == 10) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "nice values {nice:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
