-- api::idempotency: the first answer to each `Idempotency-Key` of a POST, so that a
-- retried request gets it back instead of running its command again (docs/IDEMPOTENCY.md).
-- scope: `user:<id>` when the request carried a valid access token, else `ip:<address>`.
-- request_hash: SHA-256 (hex) of the method, path and query, and body: the same key with
-- another request is refused.
-- state: 'running' while the first request runs (retries get 409), 'done' once its answer
-- (status, the headers worth replaying as [name, value] pairs, body) is stored.
create table idempotency_keys (
    scope        text not null,
    key          text not null,
    request_hash text not null,
    state        text not null check (state in ('running', 'done')),
    status       smallint,
    headers      jsonb,
    body         bytea,
    created_at   timestamptz not null,
    expires_at   timestamptz not null,
    primary key (scope, key),
    check (state = 'running' or (status is not null and headers is not null and body is not null))
);
-- the opportunistic sweep of expired keys
create index idempotency_keys_expires_idx on idempotency_keys (expires_at);
