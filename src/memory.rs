//! The allocator's arenas. glibc's malloc gives threads arenas of their own, up to eight
//! per core, and an arena keeps the memory its threads freed: the runtime's workers, its
//! blocking pool and the hashing threads each took one (5 besides the main arena on 2
//! cores after a burst of sign-ins). One arena per core bounds what they can hold. Measured
//! side by side over a 10-minute soak, resident memory grew ~41 bytes a sign-in with glibc's
//! default and ~30 with the limit, about what the live heap itself grows by (bounded
//! caches), and levelled off within 20 minutes (BENCHMARKS.md, "Sign-in", 2026-12-04,
//! evening).

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
/// thing in `main`, before any thread starts.
pub fn limit_malloc_arenas() {
    let arena_max = std::env::var("MALLOC_ARENA_MAX").ok();
    let tunables = std::env::var("GLIBC_TUNABLES").ok();
    if chosen_by_environment(arena_max.as_deref(), tunables.as_deref()) {
        return;
    }
    set_arena_max(arena_limit());
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(arenas: usize) {
    let Ok(value) = libc::c_int::try_from(arenas) else {
        return;
    };
    // SAFETY: `mallopt` only sets one of malloc's tuning parameters (under malloc's own
    // lock); `M_ARENA_MAX` bounds the arenas made from then on. No memory is touched.
    // It fails only for a value glibc refuses, which leaves its default in place.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, value) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: usize) {
    // another allocator: nothing to limit
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
