-- Named queries for the PostgreSQL backend. Each block starts with "-- name: NAME".
-- sqlite.sql defines the same names (a test checks it). Parameters are psycopg's
-- %(name)s; a parameter that may be NULL or stands alone carries a cast so the
-- server knows its type. Statements that change what a follower sees send
-- pg_notify('outspool', execution id): delivered on commit, deduplicated within
-- a transaction, so a group commit wakes each execution's followers once.

-- name: schema_exists
-- current_schema() is the first schema of search_path that exists (NULL if none).
SELECT 1 FROM pg_tables
WHERE schemaname = current_schema() AND tablename = 'outspool_schema';

-- name: schema_version_table
-- Every opener takes the same transaction-scoped lock first, so concurrent
-- openers upgrade one after another (the key is arbitrary and fixed).
SELECT pg_advisory_xact_lock(7311885668091737101);
CREATE TABLE IF NOT EXISTS outspool_schema (version integer NOT NULL);

-- name: schema_version
SELECT version FROM outspool_schema;

-- name: set_schema_version
DELETE FROM outspool_schema;
INSERT INTO outspool_schema (version) VALUES (%(version)s);

-- name: migrate_1
-- IDs use the "C" collation so that ordering and prefix ranges are bytewise, as on
-- SQLite. Chunk blobs are already compressed (or incompressible): STORAGE EXTERNAL
-- keeps PostgreSQL from trying again.
CREATE TABLE executions (
    id text COLLATE "C" PRIMARY KEY,
    name text,
    status text NOT NULL,
    command text NOT NULL,
    language text,
    code text,
    cwd text,
    env text,
    timeout double precision,
    pty boolean NOT NULL DEFAULT false,
    exit_code integer,
    signal integer,
    reason text,
    pid integer,
    worker_id text COLLATE "C",
    created_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    last_output_at double precision,
    stdout_size bigint NOT NULL DEFAULT 0,
    stderr_size bigint NOT NULL DEFAULT 0,
    output_truncated boolean NOT NULL DEFAULT false,
    chunk_count integer NOT NULL DEFAULT 0,
    progress text,
    progress_percent double precision,
    stdout bytea,
    stderr bytea
);
CREATE INDEX executions_created ON executions (created_at, id);
CREATE INDEX executions_status ON executions (status, created_at);
CREATE TABLE execution_output_chunks (
    execution_id text COLLATE "C" NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    chunk_index integer NOT NULL,
    stdout_offset bigint NOT NULL,
    stdout_size bigint NOT NULL,
    stderr_offset bigint NOT NULL,
    stderr_size bigint NOT NULL,
    codec text NOT NULL,
    timestamp double precision NOT NULL,
    runs bytea,
    stdout bytea,
    stderr bytea,
    PRIMARY KEY (execution_id, chunk_index)
);
ALTER TABLE execution_output_chunks
    ALTER COLUMN runs SET STORAGE EXTERNAL,
    ALTER COLUMN stdout SET STORAGE EXTERNAL,
    ALTER COLUMN stderr SET STORAGE EXTERNAL;

-- name: migrate_2
-- The job queue: who runs what, heartbeats, and cancellation requests.
CREATE TABLE workers (
    id text COLLATE "C" PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    kind text NOT NULL,
    started_at double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    stopped_at double precision
);
ALTER TABLE executions ADD COLUMN claimed_at double precision;
ALTER TABLE executions ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
CREATE INDEX executions_worker ON executions (worker_id, status);

-- name: migrate_3
-- Format 3 moved SQLite's large chunk blobs into segment files; PostgreSQL keeps
-- every chunk in bytea, so for it this step only records the version.
SELECT 1;

-- name: migrate_4
-- A job's resource limits and network wish (issue 10), and its secrets: kept only
-- until the execution ends (a queued job carries them to a worker), then wiped.
ALTER TABLE executions ADD COLUMN cpu_time double precision;
ALTER TABLE executions ADD COLUMN memory bigint;
ALTER TABLE executions ADD COLUMN max_processes integer;
ALTER TABLE executions ADD COLUMN max_file_size bigint;
ALTER TABLE executions ADD COLUMN network boolean NOT NULL DEFAULT false;
ALTER TABLE executions ADD COLUMN secrets text;

-- name: migrate_5
-- Listing by status walks this index newest first and stops after one page.
DROP INDEX executions_status;
CREATE INDEX executions_status ON executions (status, created_at, id);


-- name: migrate_6
-- Labels: a JSON object in the row (shown) and one indexed row per label (filtered).
-- line_times: when each read of a chunk arrived (outspool/linetimes.py); NULL when every
-- byte of the chunk was read in its first millisecond, the chunk's timestamp.
ALTER TABLE executions ADD COLUMN labels TEXT;
CREATE TABLE execution_labels (
    execution_id TEXT COLLATE "C" NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (execution_id, key)
);
CREATE INDEX execution_labels_value ON execution_labels (key, value);
CREATE INDEX executions_name ON executions (name, created_at);
ALTER TABLE execution_output_chunks ADD COLUMN line_times bytea;

-- name: migrate_7
-- Output limits: how many bytes of each stream were not kept, and the limit a job
-- asked for.
ALTER TABLE executions ADD COLUMN stdout_dropped bigint NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN stderr_dropped bigint NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN max_output bigint;

-- name: migrate_8
-- Every chunk row carries a CRC-32 over its blobs and every field a reader trusts
-- (outspool/checksum.py), checked on every read. Rows of older formats get theirs
-- computed right after this step, in the same transaction (SqlStore._seal_chunks).
ALTER TABLE execution_output_chunks ADD COLUMN checksum bigint;

-- name: migrate_9
-- Format 9: a capturing process records its identity (boot, PID namespace, PID, start
-- time), so recovery on its machine tells a late heartbeat from a dead process.
ALTER TABLE workers ADD COLUMN process text;

-- name: migrate_10
-- Prune and retention choose their victims in the database, oldest end first: this
-- index holds the finished executions by end time (and status, so a --status rule
-- is checked in the index), and a prune reads only the range it deletes from.
CREATE INDEX executions_ended
ON executions ((coalesce(finished_at, created_at)), id, status)
WHERE status NOT IN ('queued', 'running');

-- name: insert_execution
-- A queued execution wakes idle workers (payload 'queue', see store.base.QUEUE).
WITH inserted AS (
    INSERT INTO executions (id, name, status, command, language, code, cwd, env, timeout, pty,
                            created_at, worker_id, cpu_time, memory, max_processes,
                            max_file_size, network, secrets, labels, max_output)
    VALUES (%(id)s, %(name)s, %(status)s, %(command)s, %(language)s, %(code)s, %(cwd)s,
            %(env)s, %(timeout)s, %(pty)s, %(created_at)s, %(worker_id)s, %(cpu_time)s,
            %(memory)s, %(max_processes)s, %(max_file_size)s, %(network)s, %(secrets)s, %(labels)s,
            %(max_output)s)
    RETURNING status
)
SELECT pg_notify('outspool', 'queue') FROM inserted WHERE status = 'queued';

-- name: insert_label
INSERT INTO execution_labels (execution_id, key, value) VALUES (%(id)s, %(key)s, %(value)s);

-- name: mark_running
WITH changed AS (
    UPDATE executions SET status = 'running', pid = %(pid)s, started_at = %(started_at)s,
                          worker_id = %(worker_id)s
    WHERE id = %(id)s
    RETURNING id
)
SELECT pg_notify('outspool', id) FROM changed;

-- name: insert_chunk
-- A retried group commit (its COMMIT may have succeeded before the connection
-- dropped) inserts the same chunks again: they are identical, so keep the first.
INSERT INTO execution_output_chunks (execution_id, chunk_index, stdout_offset, stdout_size,
                                     stderr_offset, stderr_size, codec, timestamp, runs,
                                     stdout, stderr, line_times, checksum)
VALUES (%(execution_id)s, %(chunk_index)s, %(stdout_offset)s, %(stdout_size)s,
        %(stderr_offset)s, %(stderr_size)s, %(codec)s, %(timestamp)s, %(runs)s,
        %(stdout)s, %(stderr)s, %(line_times)s, %(checksum)s)
ON CONFLICT (execution_id, chunk_index) DO NOTHING;

-- name: delete_chunk
DELETE FROM execution_output_chunks
WHERE execution_id = %(execution_id)s AND chunk_index = %(chunk_index)s
RETURNING NULL AS blob_file;

-- name: record_output
WITH changed AS (
    UPDATE executions SET stdout_size = %(stdout_size)s, stderr_size = %(stderr_size)s,
                          chunk_count = %(chunk_count)s, last_output_at = %(last_output_at)s,
                          stdout_dropped = %(stdout_dropped)s, stderr_dropped = %(stderr_dropped)s
    WHERE id = %(id)s
    RETURNING id
)
SELECT pg_notify('outspool', id) FROM changed;

-- name: record_progress
UPDATE executions SET progress = %(progress)s, progress_percent = %(progress_percent)s
WHERE id = %(id)s;

-- name: finish_execution
WITH changed AS (
    UPDATE executions SET status = %(status)s, exit_code = %(exit_code)s, signal = %(signal)s,
                          reason = %(reason)s, finished_at = %(finished_at)s,
                          output_truncated = %(output_truncated)s, stdout = %(stdout)s,
                          stderr = %(stderr)s, secrets = NULL
    WHERE id = %(id)s AND status IN ('queued', 'running', 'lost')
    RETURNING id
)
SELECT pg_notify('outspool', id) FROM changed;

-- name: watched_executions
-- What a follower sees of each execution in :ids (a JSON array of IDs): a poller compares
-- these columns between commits to tell whose followers to wake.
SELECT id, status, chunk_count, stdout_size, stderr_size, progress, progress_percent,
       started_at, finished_at
FROM executions WHERE id IN (SELECT jsonb_array_elements_text(%(ids)s::jsonb));

-- name: get_execution
SELECT * FROM executions WHERE id = %(id)s;

-- name: find_by_prefix
SELECT id FROM executions
WHERE id >= %(prefix)s::text AND id < %(prefix)s::text || '~'
ORDER BY id LIMIT 6;

-- name: newest_by_name
SELECT * FROM executions WHERE name = %(name)s::text ORDER BY created_at DESC, id DESC LIMIT 1;

-- name: list_executions
-- Pages newest first; the bound on created_at is a range the index can seek to.
SELECT * FROM executions
WHERE created_at <= coalesce((SELECT created_at FROM executions WHERE id = %(before)s::text),
                             'Infinity')
  AND (created_at < coalesce((SELECT created_at FROM executions WHERE id = %(before)s::text),
                             'Infinity')
       OR id < %(before)s::text)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: list_executions_filtered
-- labels is NULL or a JSON array of [key, value] pairs that must all match.
SELECT * FROM executions e
WHERE (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(name)s::text IS NULL OR name = %(name)s::text)
  AND (%(since)s::double precision IS NULL OR created_at >= %(since)s::double precision)
  AND (%(labels)s::jsonb IS NULL
       OR (SELECT count(*) FROM execution_labels l
           JOIN jsonb_array_elements(%(labels)s::jsonb) j ON l.key = j ->> 0 AND l.value = j ->> 1
           WHERE l.execution_id = e.id) = jsonb_array_length(%(labels)s::jsonb))
  AND (%(before)s::text IS NULL
       OR (created_at, id) < (SELECT created_at, id FROM executions WHERE id = %(before)s::text))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: list_executions_by_status
SELECT * FROM executions
WHERE status = %(status)s::text
  AND created_at <= coalesce((SELECT created_at FROM executions WHERE id = %(before)s::text),
                             'Infinity')
  AND (created_at < coalesce((SELECT created_at FROM executions WHERE id = %(before)s::text),
                             'Infinity')
       OR id < %(before)s::text)
  AND (%(before)s::text IS NULL
       OR EXISTS (SELECT 1 FROM executions WHERE id = %(before)s::text))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: chunks_after
SELECT execution_id, chunk_index, stdout_offset, stdout_size, stderr_offset, stderr_size,
       codec, timestamp, runs, stdout, stderr, line_times, checksum
FROM execution_output_chunks
WHERE execution_id = %(id)s AND chunk_index > %(after)s
ORDER BY chunk_index
LIMIT %(limit)s;

-- name: chunks_before
SELECT execution_id, chunk_index, stdout_offset, stdout_size, stderr_offset, stderr_size,
       codec, timestamp, runs, stdout, stderr, line_times, checksum
FROM execution_output_chunks
WHERE execution_id = %(id)s AND chunk_index < %(before)s
ORDER BY chunk_index DESC
LIMIT %(limit)s;

-- name: chunk_at
-- One chunk row again (SQLite readers use it when a trimmed chunk's file vanished).
SELECT execution_id, chunk_index, stdout_offset, stdout_size, stderr_offset, stderr_size,
       codec, timestamp, runs, stdout, stderr, line_times, checksum
FROM execution_output_chunks
WHERE execution_id = %(id)s AND chunk_index = %(index)s;

-- name: unsealed_chunks
-- Migrating to format 8: chunk rows without a checksum, a page at a time in key order.
SELECT execution_id, chunk_index, stdout_offset, stdout_size, stderr_offset, stderr_size,
       codec, timestamp, runs, stdout, stderr, line_times, NULL::bigint AS blob_stdout_length,
       NULL::bigint AS blob_stderr_length, NULL::bigint AS blob_crc
FROM execution_output_chunks
WHERE checksum IS NULL
  AND (execution_id, chunk_index) > (%(execution_id)s, %(chunk_index)s)
ORDER BY execution_id, chunk_index
LIMIT %(limit)s;

-- name: seal_chunk
UPDATE execution_output_chunks SET checksum = %(sum)s
WHERE execution_id = %(execution_id)s AND chunk_index = %(chunk_index)s;

-- name: chunk_containing_stdout
SELECT max(chunk_index) AS found FROM execution_output_chunks
WHERE execution_id = %(id)s AND stdout_offset <= %(offset)s AND stdout_size > 0;

-- name: chunk_containing_stderr
SELECT max(chunk_index) AS found FROM execution_output_chunks
WHERE execution_id = %(id)s AND stderr_offset <= %(offset)s AND stderr_size > 0;

-- name: chunk_containing_all
SELECT max(chunk_index) AS found FROM execution_output_chunks
WHERE execution_id = %(id)s AND stdout_offset + stderr_offset <= %(offset)s;

-- name: chunk_before_time
-- Chunk times never go backwards within an execution, so the walk from the newest chunk
-- stops at the first one read before the time.
SELECT stdout_offset, stderr_offset FROM execution_output_chunks
WHERE execution_id = %(id)s AND timestamp < %(when)s
ORDER BY chunk_index DESC LIMIT 1;

-- name: queued_exists
SELECT 1 FROM executions WHERE status = 'queued' LIMIT 1;

-- name: claim_next
-- SKIP LOCKED: concurrent claimers each lock a different queued row; a row another
-- claimer committed meanwhile fails the status recheck, so each job is taken once.
-- Up to the limit, the oldest queued executions no other claimer holds, in one statement.
-- The pick is MATERIALIZED so it runs once: a subquery under IN may run again per row,
-- and with SKIP LOCKED a second run would pick the next rows (more than the limit).
WITH picked AS MATERIALIZED (
    SELECT id FROM executions WHERE status = 'queued'
    ORDER BY created_at, id LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE executions SET status = 'running', worker_id = %(worker_id)s, claimed_at = %(now)s
FROM picked
WHERE executions.id = picked.id AND executions.status = 'queued'
RETURNING executions.*;

-- name: register_worker
INSERT INTO workers (id, hostname, pid, kind, started_at, heartbeat_at, process)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(kind)s, %(now)s, %(now)s, %(process)s)
ON CONFLICT (id) DO NOTHING;

-- name: worker_process
SELECT process FROM workers WHERE id = %(id)s;

-- name: heartbeat
UPDATE workers SET heartbeat_at = %(now)s WHERE id = %(id)s;

-- name: unregister_worker
UPDATE workers SET stopped_at = %(now)s, heartbeat_at = %(now)s WHERE id = %(id)s;

-- name: cancel_queued
WITH changed AS (
    UPDATE executions SET status = 'cancelled', finished_at = %(now)s, reason = %(reason)s,
                          secrets = NULL
    WHERE id = %(id)s AND status = 'queued'
    RETURNING id
)
SELECT pg_notify('outspool', id) FROM changed;

-- name: request_cancel
WITH changed AS (
    UPDATE executions SET cancel_requested = true, reason = %(reason)s
    WHERE id = %(id)s AND status = 'running'
    RETURNING id
)
SELECT pg_notify('outspool', id) FROM changed;

-- name: cancel_requests
SELECT id, reason FROM executions
WHERE worker_id = %(worker_id)s AND status = 'running' AND cancel_requested;

-- name: find_lost
SELECT e.id, e.pid, w.id AS worker_id, w.hostname, w.process FROM executions e
LEFT JOIN workers w ON w.id = e.worker_id
WHERE e.status = 'running'
  AND (w.id IS NULL OR w.stopped_at IS NOT NULL OR w.heartbeat_at < %(stale_before)s);

-- name: any_lost
-- Whether a process has executions marked lost: a read before restore_lost writes.
SELECT 1 AS found FROM executions WHERE worker_id = %(id)s AND status = 'lost' LIMIT 1;

-- name: restore_lost
WITH changed AS (
    UPDATE executions SET status = 'running', finished_at = NULL, reason = NULL,
                          output_truncated = false
    WHERE worker_id = %(id)s AND status = 'lost'
    RETURNING id
)
SELECT pg_notify('outspool', id) FROM changed;

-- name: mark_lost
WITH changed AS (
    UPDATE executions SET status = 'lost', finished_at = %(now)s, reason = %(reason)s,
                          output_truncated = true, secrets = NULL
    WHERE id = %(id)s AND status = 'running'
    RETURNING id
)
SELECT pg_notify('outspool', id) FROM changed;

-- name: execution_counts
-- For /metrics: executions and the bytes they printed, by status.
SELECT status, count(*) AS executions, coalesce(sum(stdout_size + stderr_size), 0) AS bytes
FROM executions GROUP BY status;

-- name: stored_bytes
-- For /metrics: bytes the chunks take in the database (and SQLite's segment files).
SELECT coalesce(sum(coalesce(length(stdout), 0) + coalesce(length(stderr), 0)
                    + coalesce(length(runs), 0) + coalesce(length(line_times), 0)), 0)::bigint AS stored
FROM execution_output_chunks;

-- name: delete_execution
-- Only a finished execution: one a worker claimed meanwhile stays. Its chunks go
-- with it (ON DELETE CASCADE), in the same transaction.
WITH gone AS (
    DELETE FROM executions WHERE id = %(id)s AND status NOT IN ('queued', 'running')
    RETURNING id
)
SELECT id, pg_notify('outspool', id) FROM gone;

-- name: chunk_files
-- PostgreSQL keeps every chunk in its row: no files.
SELECT NULL AS blob_file WHERE false;

-- name: prune_batch
-- The next victims of a prune, oldest end first: finished executions whose (end, id) lies
-- strictly between after and upto, of the statuses in the JSON array statuses (NULL:
-- any), at most limit; with excess, only the oldest whose kept bytes (output stored,
-- uncompressed) first reach it. The scalar bounds let the index range do the work.
SELECT id, status, ended_at, kept FROM (
    SELECT id, status, ended_at, kept, sum(kept) OVER (ORDER BY ended_at, id) AS running
    FROM (
        SELECT id, status, coalesce(finished_at, created_at) AS ended_at,
               stdout_size + stderr_size - stdout_dropped - stderr_dropped AS kept
        FROM executions
        WHERE status NOT IN ('queued', 'running')
          AND coalesce(finished_at, created_at) >= %(after_ended)s::double precision
          AND coalesce(finished_at, created_at) <= %(upto_ended)s::double precision
          AND (coalesce(finished_at, created_at), id)
              > (%(after_ended)s::double precision, %(after_id)s::text)
          AND (coalesce(finished_at, created_at), id)
              < (%(upto_ended)s::double precision, %(upto_id)s::text)
          AND (%(statuses)s::jsonb IS NULL
               OR status IN (SELECT jsonb_array_elements_text(%(statuses)s::jsonb)))
        ORDER BY coalesce(finished_at, created_at), id
        LIMIT %(limit)s
    ) AS oldest
) AS counted
WHERE %(excess)s::bigint IS NULL OR running - kept < %(excess)s::bigint
ORDER BY ended_at, id;

-- name: prune_keep_from
-- The (end, id) of the offset-th newest finished execution counted from 0: --keep-last
-- keeps it and every later one.
SELECT coalesce(finished_at, created_at) AS ended_at, id
FROM executions
WHERE status NOT IN ('queued', 'running')
ORDER BY coalesce(finished_at, created_at) DESC, id DESC
LIMIT 1 OFFSET %(offset)s;

-- name: stored_output
SELECT coalesce(sum(stdout_size + stderr_size - stdout_dropped - stderr_dropped), 0)::bigint
       AS kept
FROM executions;
