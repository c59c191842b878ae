-- submit_batch reads its tables by index only, whatever their size when it was planned.
-- PL/pgSQL keeps a plan per connection after a few calls, made for the tables as they were: one
-- made while attendance_records was nearly empty (a fresh install's first check-ins) read the
-- whole table at every batch until the autovacuum's next ANALYZE. On the bench that made each
-- accept cost Postgres 0.6 ms, then 1.4 ms a minute later. Every statement here finds its rows
-- by a key that has an index. Planning each call afresh (plan_cache_mode) also avoided the
-- scans but cost Postgres 1.25 ms of CPU per 5-row batch against 0.75 ms with kept plans.
ALTER FUNCTION submit_batch SET enable_seqscan = off;
