-- Rate limits shared by every API instance (the auth limits per IP and per account): one
-- GCRA state per key, its theoretical arrival time. UNLOGGED: a crash of PostgreSQL
-- empties it, which only gives everyone a full allowance again; in exchange a check
-- writes no WAL. Keys are keyed hashes (eventstore::secrets::Secrets::rate_limit_key):
-- no address or IP is stored.
create unlogged table rate_limits (
    key text primary key,
    tat timestamptz not null
);
