-- workers::mailer: one row per event the mailer has dealt with, so that a redelivered
-- message, a restarted mailer or a recreated consumer never mails anyone twice.
-- status: 'sent' (handed to SMTP), 'written' (.eml file in development),
-- 'skipped_stale' (older than 24 hours when first seen: not sent),
-- 'invalid_recipient' (the address cannot be used: not sent).
-- recipient_domain only: the address itself lives in the log and the users read model.
create table mail_deliveries (
    event_id         uuid primary key,
    kind             text not null,
    recipient_domain text not null,
    sent_at          timestamptz not null default now(),
    status           text not null
);
