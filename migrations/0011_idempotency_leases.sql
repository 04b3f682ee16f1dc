-- api::idempotency: a key in `running` is held under a lease that its request renews while
-- it runs (docs/IDEMPOTENCY.md). A process that dies, or a release that fails while
-- PostgreSQL is away, leaves the key to expire in seconds instead of answering every retry
-- 409 for 24 hours. Keys running when this migration runs are free at once.
alter table idempotency_keys add column lease_until timestamptz not null default now();
