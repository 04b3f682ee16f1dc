-- One shared rate-limit check as eventstore::rate_limits::check runs it (the GCRA upsert
-- for a quota of 60 a minute), over 1,000 keys: pgbench -f benches/rate_limit_check.sql
\set k random(1, 1000)
insert into rate_limits as r (key, tat) values ('auth-ip:' || :k, now() + make_interval(secs => 1.0)) on conflict (key) do update set tat = greatest(r.tat, now()) + make_interval(secs => 1.0) where greatest(r.tat, now()) - now() <= make_interval(secs => 59.0) returning 1;
