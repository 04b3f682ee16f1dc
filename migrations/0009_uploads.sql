-- projections::uploads: files users stored (the bytes are under DATA_DIR/uploads/).
create table uploads (
    id            uuid primary key,
    owner_id      uuid not null,
    filename      text not null,
    content_type  text not null,
    size          bigint not null,
    sha256        text not null,
    created_at    timestamptz not null,
    deleted_at    timestamptz,
    last_sequence bigint not null
);
create index uploads_owner_idx on uploads (owner_id, created_at desc) where deleted_at is null;
