//! The allocator's arenas. glibc's malloc gives threads arenas of their own, up to eight
//! per core, and an arena keeps the memory its threads freed. Under sign-ins a server's
//! threads (the runtime's workers, its blocking pool, the hashing threads) spread over a
//! dozen arenas, and resident memory crept up by ~65 bytes a sign-in while the live heap
//! stayed flat (BENCHMARKS.md, "Sign-in", the soak; heaptrack). One arena per core keeps it
//! flat at the same sign-in rate.

/// The arenas glibc may make: one per core, at least two.
pub fn arena_limit() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

/// Whether the operator chose the arenas already (`MALLOC_ARENA_MAX`, or `arena_max` in
/// `GLIBC_TUNABLES`): then theirs stands.
fn chosen_by_environment(arena_max: Option<&str>, tunables: Option<&str>) -> bool {
    arena_max.is_some() || tunables.is_some_and(|t| t.contains("glibc.malloc.arena_max"))
}

/// Limit glibc's arenas to [`arena_limit`], unless the environment sets them. Call first
/// thing in `main`, before any thread starts. The limit set, if any.
pub fn limit_malloc_arenas() -> Option<usize> {
    let arena_max = std::env::var("MALLOC_ARENA_MAX").ok();
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    if chosen_by_environment(arena_max.as_deref(), tunables.as_deref()) {
        return None;
    }
    set_arena_max(arena_limit())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(arenas: usize) -> Option<usize> {
    let value = libc::c_int::try_from(arenas).ok()?;
    // SAFETY: `mallopt` only sets one of malloc's tuning parameters (under malloc's own
    // lock); `M_ARENA_MAX` bounds the arenas made from then on. No memory is touched.
    let done = unsafe { libc::mallopt(libc::M_ARENA_MAX, value) };
    (done == 1).then_some(arenas)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: usize) -> Option<usize> {
    None // another allocator: nothing to limit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_choice_of_arenas_stands() {
        assert!(chosen_by_environment(Some("4"), None));
        assert!(chosen_by_environment(
            None,
            Some("glibc.malloc.trim_threshold=1:glibc.malloc.arena_max=1")
        ));
        assert!(!chosen_by_environment(
            None,
            Some("glibc.malloc.trim_threshold=1")
        ));
        assert!(!chosen_by_environment(None, None));
        assert!(arena_limit() >= 2);
    }
}
