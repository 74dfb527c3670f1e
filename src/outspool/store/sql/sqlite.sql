-- Named queries for the SQLite backend. Each block starts with "-- name: NAME".
-- postgres.sql defines the same names (a test checks it).

-- name: schema_exists
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outspool_schema';

-- name: schema_version_table
CREATE TABLE IF NOT EXISTS outspool_schema (version INTEGER NOT NULL);

-- name: schema_version
SELECT version FROM outspool_schema;

-- name: set_schema_version
DELETE FROM outspool_schema;
INSERT INTO outspool_schema (version) VALUES (:version);

-- name: migrate_1
-- The executions table keeps the design document's columns; output lives in
-- append-only chunk rows and small outputs are copied inline when done.
CREATE TABLE executions (
    id TEXT PRIMARY KEY,
    name TEXT,
    status TEXT NOT NULL,
    command TEXT NOT NULL,
    language TEXT,
    code TEXT,
    cwd TEXT,
    env TEXT,
    timeout REAL,
    pty INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    signal INTEGER,
    reason TEXT,
    pid INTEGER,
    worker_id TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    last_output_at REAL,
    stdout_size INTEGER NOT NULL DEFAULT 0,
    stderr_size INTEGER NOT NULL DEFAULT 0,
    output_truncated INTEGER NOT NULL DEFAULT 0,
    chunk_count INTEGER NOT NULL DEFAULT 0,
    progress TEXT,
    progress_percent REAL,
    stdout BLOB,
    stderr BLOB
);
CREATE INDEX executions_created ON executions (created_at, id);
CREATE INDEX executions_status ON executions (status, created_at);
CREATE TABLE execution_output_chunks (
    id INTEGER PRIMARY KEY,
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL,
    stdout_offset INTEGER NOT NULL,
    stdout_size INTEGER NOT NULL,
    stderr_offset INTEGER NOT NULL,
    stderr_size INTEGER NOT NULL,
    codec TEXT NOT NULL,
    timestamp REAL NOT NULL,
    runs BLOB,
    stdout BLOB,
    stderr BLOB
);
CREATE UNIQUE INDEX idx_output_chunks_execution
    ON execution_output_chunks (execution_id, chunk_index);

-- name: migrate_2
-- The job queue: who runs what, heartbeats, and cancellation requests.
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    kind TEXT NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at REAL
);
ALTER TABLE executions ADD COLUMN claimed_at REAL;
ALTER TABLE executions ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX executions_worker ON executions (worker_id, status);

-- name: migrate_3
-- Large chunk blobs live in segment files beside the database (store/segments.py);
-- such a row has NULL stdout/stderr and says where its bytes are.
ALTER TABLE execution_output_chunks ADD COLUMN blob_offset INTEGER;
ALTER TABLE execution_output_chunks ADD COLUMN blob_stdout_length INTEGER;
ALTER TABLE execution_output_chunks ADD COLUMN blob_stderr_length INTEGER;
ALTER TABLE execution_output_chunks ADD COLUMN blob_crc INTEGER;

-- name: migrate_4
-- A job's resource limits and network wish (issue 10), and its secrets: kept only
-- until the execution ends (a queued job carries them to a worker), then wiped.
ALTER TABLE executions ADD COLUMN cpu_time REAL;
ALTER TABLE executions ADD COLUMN memory INTEGER;
ALTER TABLE executions ADD COLUMN max_processes INTEGER;
ALTER TABLE executions ADD COLUMN max_file_size INTEGER;
ALTER TABLE executions ADD COLUMN network INTEGER NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN secrets TEXT;

-- name: migrate_5
-- Listing by status walks this index newest first and stops after one page; with
-- (status, created_at) and a status test that could be NULL, a page of a rare status
-- scanned the whole table (48 ms at 201,000 executions, bench/scale/growth.py).
DROP INDEX executions_status;
CREATE INDEX executions_status ON executions (status, created_at, id);

-- name: migrate_6
-- Labels: a JSON object in the row (shown) and one indexed row per label (filtered).
-- line_times: when each read of a chunk arrived (outspool/linetimes.py); NULL when every
-- byte of the chunk was read in its first millisecond, the chunk's timestamp.
ALTER TABLE executions ADD COLUMN labels TEXT;
CREATE TABLE execution_labels (
    execution_id TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (execution_id, key)
);
CREATE INDEX execution_labels_value ON execution_labels (key, value);
CREATE INDEX executions_name ON executions (name, created_at);
ALTER TABLE execution_output_chunks ADD COLUMN line_times BLOB;

-- name: migrate_7
-- Output limits: how many bytes of each stream were not kept, and the limit a job
-- asked for. A trimmable (tail-window) chunk's blobs have a segment file of their
-- own (blob_file), deleted with it.
ALTER TABLE executions ADD COLUMN stdout_dropped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN stderr_dropped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN max_output INTEGER;
ALTER TABLE execution_output_chunks ADD COLUMN blob_file TEXT;

-- name: migrate_8
-- Every chunk row carries a CRC-32 over its blobs and every field a reader trusts
-- (outspool/checksum.py), checked on every read. Rows of older formats get theirs
-- computed right after this step, in the same transaction (SqlStore._seal_chunks).
ALTER TABLE execution_output_chunks ADD COLUMN checksum INTEGER;

-- name: migrate_9
-- Format 9: a capturing process records its identity (boot, PID namespace, PID, start
-- time), so recovery on its machine tells a late heartbeat from a dead process.
ALTER TABLE workers ADD COLUMN process TEXT;

-- name: migrate_10
-- Prune and retention choose their victims in the database, oldest end first: this
-- index holds the finished executions by end time (and status, so a --status rule
-- is checked in the index), and a prune reads only the range it deletes from.
CREATE INDEX executions_ended
ON executions (coalesce(finished_at, created_at), id, status)
WHERE status NOT IN ('queued', 'running');

-- name: insert_execution
INSERT INTO executions (id, name, status, command, language, code, cwd, env, timeout, pty,
                        created_at, worker_id, cpu_time, memory, max_processes, max_file_size,
                        network, secrets, labels, max_output)
VALUES (:id, :name, :status, :command, :language, :code, :cwd, :env, :timeout, :pty,
        :created_at, :worker_id, :cpu_time, :memory, :max_processes, :max_file_size,
        :network, :secrets, :labels, :max_output);

-- name: insert_label
INSERT INTO execution_labels (execution_id, key, value) VALUES (:id, :key, :value);

-- name: mark_running
UPDATE executions SET status = 'running', pid = :pid, started_at = :started_at,
                      worker_id = :worker_id
WHERE id = :id;

-- name: insert_chunk
INSERT INTO execution_output_chunks (execution_id, chunk_index, stdout_offset, stdout_size,
                                     stderr_offset, stderr_size, codec, timestamp, runs,
                                     stdout, stderr, line_times, blob_offset,
                                     blob_stdout_length, blob_stderr_length, blob_crc, blob_file,
                                     checksum)
VALUES (:execution_id, :chunk_index, :stdout_offset, :stdout_size, :stderr_offset,
        :stderr_size, :codec, :timestamp, :runs, :stdout, :stderr, :line_times, :blob_offset,
        :blob_stdout_length, :blob_stderr_length, :blob_crc, :blob_file, :checksum);

-- name: delete_chunk
DELETE FROM execution_output_chunks WHERE execution_id = :execution_id AND chunk_index = :chunk_index
RETURNING blob_file;

-- name: record_output
UPDATE executions SET stdout_size = :stdout_size, stderr_size = :stderr_size,
                      chunk_count = :chunk_count, last_output_at = :last_output_at,
                      stdout_dropped = :stdout_dropped, stderr_dropped = :stderr_dropped
WHERE id = :id;

-- name: record_progress
UPDATE executions SET progress = :progress, progress_percent = :progress_percent
WHERE id = :id;

-- name: finish_execution
UPDATE executions SET status = :status, exit_code = :exit_code, signal = :signal,
                      reason = :reason, finished_at = :finished_at,
                      output_truncated = :output_truncated, stdout = :stdout, stderr = :stderr,
                      secrets = NULL
WHERE id = :id AND status IN ('queued', 'running', 'lost');

-- name: watched_executions
-- What a follower sees of each execution in :ids (a JSON array of IDs): a poller compares
-- these columns between commits to tell whose followers to wake.
SELECT id, status, chunk_count, stdout_size, stderr_size, progress, progress_percent,
       started_at, finished_at
FROM executions WHERE id IN (SELECT value FROM json_each(:ids));

-- name: get_execution
SELECT * FROM executions WHERE id = :id;

-- name: find_by_prefix
SELECT id FROM executions WHERE id >= :prefix AND id < :prefix || '~' ORDER BY id LIMIT 6;

-- name: newest_by_name
SELECT * FROM executions WHERE name = :name ORDER BY created_at DESC, id DESC LIMIT 1;

-- name: list_executions
-- Pages newest first. The bound on created_at is a range the index can seek to: without
-- ``before`` it is an empty blob, which SQLite sorts after every number and every text, so
-- the first page costs the same at any size and a damaged text created_at is listed too.
SELECT * FROM executions
WHERE created_at <= coalesce((SELECT created_at FROM executions WHERE id = :before), X'')
  AND (created_at < coalesce((SELECT created_at FROM executions WHERE id = :before), X'')
       OR id < :before)
  AND (:before IS NULL OR EXISTS (SELECT 1 FROM executions WHERE id = :before))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: list_executions_by_status
SELECT * FROM executions
WHERE status = :status
  AND created_at <= coalesce((SELECT created_at FROM executions WHERE id = :before), X'')
  AND (created_at < coalesce((SELECT created_at FROM executions WHERE id = :before), X'')
       OR id < :before)
  AND (:before IS NULL OR EXISTS (SELECT 1 FROM executions WHERE id = :before))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: list_executions_filtered
-- labels is NULL or a JSON array of [key, value] pairs that must all match.
SELECT * FROM executions e
WHERE (:status IS NULL OR status = :status)
  AND (:name IS NULL OR name = :name)
  AND (:since IS NULL OR created_at >= :since)
  AND (:labels IS NULL
       OR (SELECT count(*) FROM execution_labels l
           JOIN json_each(:labels) j
             ON l.key = json_extract(j.value, '$[0]') AND l.value = json_extract(j.value, '$[1]')
           WHERE l.execution_id = e.id) = json_array_length(:labels))
  AND (:before IS NULL OR created_at < (SELECT created_at FROM executions WHERE id = :before)
       OR (created_at = (SELECT created_at FROM executions WHERE id = :before) AND id < :before))
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: chunks_after
SELECT execution_id, chunk_index, stdout_offset, stdout_size, stderr_offset, stderr_size,
       codec, timestamp, runs, stdout, stderr, line_times, checksum, blob_offset,
       blob_stdout_length, blob_stderr_length, blob_crc, blob_file
FROM execution_output_chunks
WHERE execution_id = :id AND chunk_index > :after
ORDER BY chunk_index
LIMIT :limit;

-- name: chunks_before
SELECT execution_id, chunk_index, stdout_offset, stdout_size, stderr_offset, stderr_size,
       codec, timestamp, runs, stdout, stderr, line_times, checksum, blob_offset,
       blob_stdout_length, blob_stderr_length, blob_crc, blob_file
FROM execution_output_chunks
WHERE execution_id = :id AND chunk_index < :before
ORDER BY chunk_index DESC
LIMIT :limit;

-- name: chunk_at
-- One chunk row again: a reader whose chunk's own file vanished looks for its cut copy.
SELECT execution_id, chunk_index, stdout_offset, stdout_size, stderr_offset, stderr_size,
       codec, timestamp, runs, stdout, stderr, line_times, checksum, blob_offset,
       blob_stdout_length, blob_stderr_length, blob_crc, blob_file
FROM execution_output_chunks
WHERE execution_id = :id AND chunk_index = :index;

-- name: unsealed_chunks
-- Migrating to format 8: chunk rows without a checksum, a page at a time in key order.
SELECT execution_id, chunk_index, stdout_offset, stdout_size, stderr_offset, stderr_size,
       codec, timestamp, runs, stdout, stderr, line_times, blob_stdout_length,
       blob_stderr_length, blob_crc
FROM execution_output_chunks
WHERE checksum IS NULL AND (execution_id, chunk_index) > (:execution_id, :chunk_index)
ORDER BY execution_id, chunk_index
LIMIT :limit;

-- name: seal_chunk
UPDATE execution_output_chunks SET checksum = :sum
WHERE execution_id = :execution_id AND chunk_index = :chunk_index;

-- name: chunk_containing_stdout
SELECT max(chunk_index) AS found FROM execution_output_chunks
WHERE execution_id = :id AND stdout_offset <= :offset AND stdout_size > 0;

-- name: chunk_containing_stderr
SELECT max(chunk_index) AS found FROM execution_output_chunks
WHERE execution_id = :id AND stderr_offset <= :offset AND stderr_size > 0;

-- name: chunk_containing_all
SELECT max(chunk_index) AS found FROM execution_output_chunks
WHERE execution_id = :id AND stdout_offset + stderr_offset <= :offset;

-- name: chunk_before_time
-- Chunk times never go backwards within an execution, so the walk from the newest chunk
-- stops at the first one read before the time.
SELECT stdout_offset, stderr_offset FROM execution_output_chunks
WHERE execution_id = :id AND timestamp < :when
ORDER BY chunk_index DESC LIMIT 1;

-- name: queued_exists
SELECT 1 FROM executions WHERE status = 'queued' LIMIT 1;

-- name: claim_next
-- The oldest :limit queued executions, in one statement under the write lock.
UPDATE executions SET status = 'running', worker_id = :worker_id, claimed_at = :now
WHERE id IN (SELECT id FROM executions WHERE status = 'queued'
             ORDER BY created_at, id LIMIT :limit)
RETURNING *;

-- name: register_worker
INSERT INTO workers (id, hostname, pid, kind, started_at, heartbeat_at, process)
VALUES (:id, :hostname, :pid, :kind, :now, :now, :process);

-- name: worker_process
SELECT process FROM workers WHERE id = :id;

-- name: heartbeat
UPDATE workers SET heartbeat_at = :now WHERE id = :id;

-- name: unregister_worker
UPDATE workers SET stopped_at = :now, heartbeat_at = :now WHERE id = :id;

-- name: cancel_queued
UPDATE executions SET status = 'cancelled', finished_at = :now, reason = :reason,
                      secrets = NULL
WHERE id = :id AND status = 'queued';

-- name: request_cancel
UPDATE executions SET cancel_requested = 1, reason = :reason
WHERE id = :id AND status = 'running';

-- name: cancel_requests
SELECT id, reason FROM executions
WHERE worker_id = :worker_id AND status = 'running' AND cancel_requested = 1;

-- name: find_lost
SELECT e.id, e.pid, w.id AS worker_id, w.hostname, w.process FROM executions e
LEFT JOIN workers w ON w.id = e.worker_id
WHERE e.status = 'running'
  AND (w.id IS NULL OR w.stopped_at IS NOT NULL OR w.heartbeat_at < :stale_before);

-- name: any_lost
-- Whether a process has executions marked lost: a read before restore_lost writes.
SELECT 1 AS found FROM executions WHERE worker_id = :id AND status = 'lost' LIMIT 1;

-- name: restore_lost
UPDATE executions SET status = 'running', finished_at = NULL, reason = NULL,
                      output_truncated = 0
WHERE worker_id = :id AND status = 'lost';

-- name: mark_lost
UPDATE executions SET status = 'lost', finished_at = :now, reason = :reason,
                      output_truncated = 1, secrets = NULL
WHERE id = :id AND status = 'running';

-- name: execution_counts
-- For /metrics: executions and the bytes they printed, by status.
SELECT status, count(*) AS executions, coalesce(sum(stdout_size + stderr_size), 0) AS bytes
FROM executions GROUP BY status;

-- name: stored_bytes
-- For /metrics: bytes the chunks take in the database (and SQLite's segment files).
SELECT coalesce(sum(coalesce(length(stdout), 0) + coalesce(length(stderr), 0)
                    + coalesce(blob_stdout_length, 0) + coalesce(blob_stderr_length, 0)
                    + coalesce(length(runs), 0) + coalesce(length(line_times), 0)), 0) AS stored
FROM execution_output_chunks;

-- name: delete_execution
-- Only a finished execution: one a worker claimed meanwhile stays. Its chunks go
-- with it (ON DELETE CASCADE), in the same transaction.
DELETE FROM executions WHERE id = :id AND status NOT IN ('queued', 'running')
RETURNING id;

-- name: chunk_files
-- The own files of an execution's trimmable chunks, removed after it is deleted.
SELECT blob_file FROM execution_output_chunks
WHERE execution_id = :id AND blob_file IS NOT NULL;

-- name: prune_batch
-- The next victims of a prune, oldest end first: finished executions whose (end, id) lies
-- strictly between :after and :upto, of the statuses in the JSON array :statuses (NULL:
-- any), at most :limit; with :excess, only the oldest whose kept bytes (output stored,
-- uncompressed) first reach it. The scalar bounds let the index range do the work.
SELECT id, status, ended_at, kept FROM (
    SELECT id, status, ended_at, kept, sum(kept) OVER (ORDER BY ended_at, id) AS running
    FROM (
        SELECT id, status, coalesce(finished_at, created_at) AS ended_at,
               stdout_size + stderr_size - stdout_dropped - stderr_dropped AS kept
        FROM executions
        WHERE status NOT IN ('queued', 'running')
          AND coalesce(finished_at, created_at) >= :after_ended
          AND coalesce(finished_at, created_at) <= :upto_ended
          AND (coalesce(finished_at, created_at), id) > (:after_ended, :after_id)
          AND (coalesce(finished_at, created_at), id) < (:upto_ended, :upto_id)
          AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
        ORDER BY coalesce(finished_at, created_at), id
        LIMIT :limit
    )
)
WHERE :excess IS NULL OR running - kept < :excess
ORDER BY ended_at, id;

-- name: prune_keep_from
-- The (end, id) of the :offset-th newest finished execution counted from 0: --keep-last
-- keeps it and every later one.
SELECT coalesce(finished_at, created_at) AS ended_at, id
FROM executions
WHERE status NOT IN ('queued', 'running')
ORDER BY coalesce(finished_at, created_at) DESC, id DESC
LIMIT 1 OFFSET :offset;

-- name: stored_output
SELECT coalesce(sum(stdout_size + stderr_size - stdout_dropped - stderr_dropped), 0) AS kept
FROM executions;
