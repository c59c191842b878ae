-- submit_batch plans its statements at every call, for the arrays and table it has then.
-- PL/pgSQL otherwise keeps a generic plan per connection after a few calls, made for the table
-- as it was: one made while attendance_records was nearly empty (a fresh install's first
-- check-ins) reads the whole table at every batch until the autovacuum's next ANALYZE. On the
-- bench that made each accept cost Postgres 0.6 ms, then 1.4 ms a minute later; replanning
-- costs far less than one such read.
ALTER FUNCTION submit_batch SET plan_cache_mode = force_custom_plan;
