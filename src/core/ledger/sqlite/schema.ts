/** The SQLite ledger's schema: migrations embedded as strings, tracked by `PRAGMA user_version`. */

/** Migrations, in order; `PRAGMA user_version` is the number applied. Never edit one that has shipped. */
export const MIGRATIONS = [
  `
  CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    job TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    resume TEXT NOT NULL,
    reason TEXT,
    ingested INTEGER NOT NULL DEFAULT 0,
    ingest_owner TEXT,
    ingest_expires INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
  );
  CREATE INDEX runs_name ON runs (name, id);

  CREATE TABLE inputs (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    idx INTEGER NOT NULL,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    checkpoint TEXT,
    rows INTEGER NOT NULL DEFAULT 0,
    problems INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, idx)
  );

  CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    input INTEGER NOT NULL,
    key TEXT NOT NULL,
    row INTEGER NOT NULL,
    source_id TEXT,
    data TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER,
    lease_owner TEXT,
    lease_expires INTEGER,
    output TEXT,
    error_class TEXT,
    error TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    UNIQUE (run_id, input, key)
  );
  CREATE INDEX items_state ON items (run_id, state, id);

  CREATE TABLE attempts (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items (id),
    run_id INTEGER NOT NULL,
    n INTEGER NOT NULL,
    owner TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    outcome TEXT,
    error_class TEXT,
    error TEXT,
    http_status INTEGER,
    input_tokens INTEGER,
    output_tokens INTEGER,
    latency_ms INTEGER
  );
  CREATE INDEX attempts_item ON attempts (item_id, n);
  CREATE INDEX attempts_run_ended ON attempts (run_id, ended_at);
  CREATE INDEX attempts_errors ON attempts (run_id, error_class) WHERE error_class IS NOT NULL;

  CREATE TABLE problems (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    input INTEGER NOT NULL,
    file TEXT NOT NULL,
    line INTEGER NOT NULL,
    reason TEXT NOT NULL,
    excerpt TEXT NOT NULL
  );
  CREATE INDEX problems_run ON problems (run_id, input, line);
  `,
  // 2: input tokens served from the provider's prompt cache (a part of input_tokens, billed lower)
  `
  ALTER TABLE items ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE attempts ADD COLUMN cached_input_tokens INTEGER;
  `,
  // 3: batch mode. A batch row is the submission intent (DESIGN §4 rule 3); an item in a batch knows its batch,
  // its line in the request file and the bytes of that line (its exact request, replayed on retry). Tokens paid at
  // the batch price are kept apart, so cost stays computed at read time.
  `
  CREATE TABLE batches (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    tag TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    provider_id TEXT,
    status TEXT,
    phase TEXT,
    outcome TEXT,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    total INTEGER,
    done INTEGER,
    failed INTEGER,
    files TEXT,
    requests TEXT NOT NULL,
    output TEXT,
    errors TEXT,
    error TEXT,
    error_class TEXT,
    lines INTEGER NOT NULL DEFAULT 0,
    polls INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER,
    created_at INTEGER NOT NULL,
    submitted_at INTEGER,
    ended_at INTEGER,
    finished_at INTEGER
  );
  CREATE INDEX batches_run ON batches (run_id, state);
  ALTER TABLE items ADD COLUMN batch_id INTEGER;
  ALTER TABLE items ADD COLUMN batch_line INTEGER;
  ALTER TABLE items ADD COLUMN batch_offset INTEGER;
  ALTER TABLE items ADD COLUMN batch_bytes INTEGER;
  ALTER TABLE items ADD COLUMN batch_input_tokens INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE items ADD COLUMN batch_output_tokens INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE items ADD COLUMN batch_cached_tokens INTEGER NOT NULL DEFAULT 0;
  CREATE INDEX items_batch ON items (batch_id) WHERE batch_id IS NOT NULL;
  ALTER TABLE attempts ADD COLUMN batch_id INTEGER;
  ALTER TABLE runs ADD COLUMN queue_tokens INTEGER;
  ALTER TABLE runs ADD COLUMN queue_requests INTEGER;
  ALTER TABLE runs ADD COLUMN batch_owner TEXT;
  ALTER TABLE runs ADD COLUMN batch_expires INTEGER;
  ALTER TABLE runs ADD COLUMN exported_at INTEGER;
  `,
  // 4: counters kept by the ledger itself, so a page over a run of millions of items reads a few rows, never a scan
  // (issue 6). Per run and state: how many items (exact per state), and sums of attempts and tokens (exact summed
  // over a run's rows; their split between states is not kept); per run and 10 s: how many items ended; per run and
  // error class: how many attempts failed so, with the first example. Triggers count every change but the batch
  // path's (into or out of queued and submitted: the driver counts those per statement, see tallies.ts `shift`),
  // and item inserts, which ingest counts per source batch: a trigger per row there cost a third of batch mode's
  // throughput.
  `
  CREATE TABLE tallies (
    run_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    n INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    batch_input_tokens INTEGER NOT NULL DEFAULT 0,
    batch_output_tokens INTEGER NOT NULL DEFAULT 0,
    batch_cached_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, state)
  ) WITHOUT ROWID;
  INSERT INTO tallies
    SELECT run_id, state, count(*), sum(attempts), sum(input_tokens), sum(output_tokens), sum(cached_input_tokens),
    sum(batch_input_tokens), sum(batch_output_tokens), sum(batch_cached_tokens) FROM items GROUP BY run_id, state;
  CREATE TRIGGER items_tally AFTER UPDATE OF state, attempts, input_tokens, output_tokens, cached_input_tokens,
    batch_input_tokens, batch_output_tokens, batch_cached_tokens ON items
    WHEN old.state NOT IN ('queued', 'submitted') AND new.state NOT IN ('queued', 'submitted')
  BEGIN
    UPDATE tallies SET n = n - 1, attempts = attempts - old.attempts, input_tokens = input_tokens - old.input_tokens,
      output_tokens = output_tokens - old.output_tokens,
      cached_input_tokens = cached_input_tokens - old.cached_input_tokens,
      batch_input_tokens = batch_input_tokens - old.batch_input_tokens,
      batch_output_tokens = batch_output_tokens - old.batch_output_tokens,
      batch_cached_tokens = batch_cached_tokens - old.batch_cached_tokens
      WHERE run_id = old.run_id AND state = old.state;
    INSERT INTO tallies VALUES (new.run_id, new.state, 1, new.attempts, new.input_tokens, new.output_tokens,
      new.cached_input_tokens, new.batch_input_tokens, new.batch_output_tokens, new.batch_cached_tokens)
      ON CONFLICT (run_id, state) DO UPDATE SET n = n + 1, attempts = attempts + excluded.attempts,
      input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
      cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
      batch_input_tokens = batch_input_tokens + excluded.batch_input_tokens,
      batch_output_tokens = batch_output_tokens + excluded.batch_output_tokens,
      batch_cached_tokens = batch_cached_tokens + excluded.batch_cached_tokens;
  END;

  CREATE TABLE progress (
    run_id INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, bucket)
  ) WITHOUT ROWID;
  INSERT INTO progress
    SELECT run_id, updated_at / 10000, sum(state = 'completed'), sum(state <> 'completed') FROM items
    WHERE state IN ('completed', 'failed', 'needs_review') GROUP BY 1, 2;
  CREATE TRIGGER items_progress AFTER UPDATE OF state ON items
    WHEN new.state IN ('completed', 'failed', 'needs_review')
    AND old.state NOT IN ('completed', 'failed', 'needs_review', 'submitted')
  BEGIN
    INSERT INTO progress VALUES (new.run_id, new.updated_at / 10000, new.state = 'completed', new.state <> 'completed')
      ON CONFLICT (run_id, bucket) DO UPDATE SET completed = completed + excluded.completed,
      failed = failed + excluded.failed;
  END;

  CREATE TABLE error_tallies (
    run_id INTEGER NOT NULL,
    class TEXT NOT NULL,
    n INTEGER NOT NULL,
    attempt_id INTEGER NOT NULL,
    PRIMARY KEY (run_id, class)
  ) WITHOUT ROWID;
  INSERT INTO error_tallies
    SELECT run_id, error_class, count(*), min(id) FROM attempts WHERE error_class IS NOT NULL
    GROUP BY run_id, error_class;
  CREATE TRIGGER attempts_error_insert AFTER INSERT ON attempts WHEN new.error_class IS NOT NULL
  BEGIN
    INSERT INTO error_tallies VALUES (new.run_id, new.error_class, 1, new.id)
      ON CONFLICT (run_id, class) DO UPDATE SET n = n + 1;
  END;
  CREATE TRIGGER attempts_error_update AFTER UPDATE OF error_class ON attempts
    WHEN new.error_class IS NOT NULL AND old.error_class IS NULL
  BEGIN
    INSERT INTO error_tallies VALUES (new.run_id, new.error_class, 1, new.id)
      ON CONFLICT (run_id, class) DO UPDATE SET n = n + 1;
  END;
  CREATE INDEX attempts_failed ON attempts (run_id, ended_at) WHERE error_class IS NOT NULL;
  `,
  // a run's canary (README, "Canary"): how many of its first items go out as direct calls before the rest, and when
  // their report was given (null while they are under way)
  `
  CREATE TABLE canaries (
    run_id INTEGER PRIMARY KEY REFERENCES runs (id),
    items INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    reported_at INTEGER
  );
  `,
  // the worker registry (issue 14): each process working on a run, with its last heartbeat, so that a run whose
  // workers are all gone is shown `interrupted` while its stored state stays `running` (ledger.ts `Workers`)
  `
  CREATE TABLE workers (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    owner TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    beat_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, owner)
  ) WITHOUT ROWID;
  `,
  // the response cache (issue 16, README "Cache"): accepted answers by the SHA-256 of their canonical request, shared
  // by every run of the store. An item's `cache_key` is the key it was looked up under ("" when no request can be
  // made of its row; null until the cache was asked), so the answer it is completed with is written under it in the
  // same transaction; `cached_usage` is what a hit's answer had cost. Items the cache has not been asked for are
  // found through their own partial index, however many pending items have been. An entry's rowid is 52 bits of a
  // hash of its key (cache.ts `slot`): a look-up is one search of the table itself, not of an index and then the
  // table (keys are random: each search is a page the page cache seldom holds); the key is kept and compared, so two
  // keys of one slot (one in ~10^8 pairs at a million entries) cost a re-paid answer, never a wrong one. A hit moves an item pending →
  // completed, which only the cache does: `serve` counts those per statement, as ingest and the batch path do, and
  // the triggers skip them. `cache_tallies`: hits, misses and what the hits saved, per run.
  `
  ALTER TABLE items ADD COLUMN cache_key TEXT;
  ALTER TABLE items ADD COLUMN cached_usage TEXT;
  CREATE INDEX items_unlooked ON items (run_id, id) WHERE state = 'pending' AND cache_key IS NULL;
  CREATE TABLE cache (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    output TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cost_usd REAL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL
  );
  CREATE INDEX cache_created ON cache (created_at);
  CREATE TABLE cache_tallies (
    run_id INTEGER PRIMARY KEY REFERENCES runs (id),
    hits INTEGER NOT NULL DEFAULT 0,
    misses INTEGER NOT NULL DEFAULT 0,
    saved_usd REAL NOT NULL DEFAULT 0
  );
  DROP TRIGGER items_tally;
  CREATE TRIGGER items_tally AFTER UPDATE OF state, attempts, input_tokens, output_tokens, cached_input_tokens,
    batch_input_tokens, batch_output_tokens, batch_cached_tokens ON items
    WHEN old.state NOT IN ('queued', 'submitted') AND new.state NOT IN ('queued', 'submitted')
    AND NOT (old.state = 'pending' AND new.state = 'completed')
  BEGIN
    UPDATE tallies SET n = n - 1, attempts = attempts - old.attempts, input_tokens = input_tokens - old.input_tokens,
      output_tokens = output_tokens - old.output_tokens,
      cached_input_tokens = cached_input_tokens - old.cached_input_tokens,
      batch_input_tokens = batch_input_tokens - old.batch_input_tokens,
      batch_output_tokens = batch_output_tokens - old.batch_output_tokens,
      batch_cached_tokens = batch_cached_tokens - old.batch_cached_tokens
      WHERE run_id = old.run_id AND state = old.state;
    INSERT INTO tallies VALUES (new.run_id, new.state, 1, new.attempts, new.input_tokens, new.output_tokens,
      new.cached_input_tokens, new.batch_input_tokens, new.batch_output_tokens, new.batch_cached_tokens)
      ON CONFLICT (run_id, state) DO UPDATE SET n = n + 1, attempts = attempts + excluded.attempts,
      input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
      cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
      batch_input_tokens = batch_input_tokens + excluded.batch_input_tokens,
      batch_output_tokens = batch_output_tokens + excluded.batch_output_tokens,
      batch_cached_tokens = batch_cached_tokens + excluded.batch_cached_tokens;
  END;
  DROP TRIGGER items_progress;
  CREATE TRIGGER items_progress AFTER UPDATE OF state ON items
    WHEN new.state IN ('completed', 'failed', 'needs_review')
    AND old.state NOT IN ('completed', 'failed', 'needs_review', 'submitted', 'pending')
  BEGIN
    INSERT INTO progress VALUES (new.run_id, new.updated_at / 10000, new.state = 'completed', new.state <> 'completed')
      ON CONFLICT (run_id, bucket) DO UPDATE SET completed = completed + excluded.completed,
      failed = failed + excluded.failed;
  END;
  `,
  // the run's rate buckets (ledger.ts `Workers.take`): the job's rpm and tpm as one bucket each per run, shared by
  // every worker of it, so that together they stay under them. `level` is what is left at `at` (ms).
  `
  CREATE TABLE rates (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    name TEXT NOT NULL,
    level REAL NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (run_id, name)
  ) WITHOUT ROWID;
  `,
  // embeddings and exports (issue 17): an embedding item's vector as float32 bytes (little-endian, 4 a dimension),
  // and the cache's copy of it; \`exports\`: each \`spool results\` export that asked to be remembered
  // (\`--since-last-export\`), with the mark the next one starts after
  `
  ALTER TABLE items ADD COLUMN vector BLOB;
  ALTER TABLE cache ADD COLUMN vector BLOB;
  CREATE TABLE exports (
    run_id INTEGER NOT NULL REFERENCES runs (id),
    at INTEGER NOT NULL,
    mark INTEGER NOT NULL,
    rows INTEGER NOT NULL,
    format TEXT NOT NULL,
    path TEXT,
    PRIMARY KEY (run_id, at)
  ) WITHOUT ROWID;
  `,
  // review decisions (`spool review`, the page): each one moved an item out of needs_review; the item's output before
  // and after it, so that an edit or a rejection can be told apart from the model's answer later
  `
  CREATE TABLE reviews (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    item_id INTEGER NOT NULL REFERENCES items (id),
    at INTEGER NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT,
    before TEXT,
    after TEXT,
    by TEXT NOT NULL
  );
  CREATE INDEX reviews_item ON reviews (item_id, id);
  `,
  // the response cache kept in the order its answers were written, found through a narrow index of their slots (52
  // bits of a hash of the key, cache.ts `slot`). A run asks for its rows' answers in about the order an earlier run
  // of those rows wrote them (its file's), so the entries it reads are neighbours on a few pages, where migration 7's
  // table, ordered by slot, made every look-up a random page; the index (~16 bytes an entry) is what stays random,
  // and it is small enough to stay in the page cache. One entry a slot, as before: a key whose slot another key holds
  // replaces it (one in ~10^8 pairs at a million entries: a re-paid answer, never a wrong one).
  `
  CREATE TABLE cache_next (
    id INTEGER PRIMARY KEY,
    slot INTEGER NOT NULL,
    key TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    output TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cost_usd REAL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    vector BLOB
  );
  INSERT INTO cache_next (slot, key, provider, model, output, input_tokens, output_tokens, cached_input_tokens, cost_usd,
    bytes, created_at, vector)
    SELECT id, key, provider, model, output, input_tokens, output_tokens, cached_input_tokens, cost_usd, bytes,
    created_at, vector FROM cache ORDER BY created_at, id;
  DROP TABLE cache;
  ALTER TABLE cache_next RENAME TO cache;
  CREATE UNIQUE INDEX cache_slot ON cache (slot);
  CREATE INDEX cache_created ON cache (created_at);
  `,
  // pipelines (issue 18, README "Pipelines"): a step's run names the pipeline run it belongs to (`parent`, its id)
  // and its step (`step`, its name); both null for any other run. A step's items are made by `Steps.add` (steps.ts)
  // as their rows' needed steps end, some in a state of their own: `skipped`, a step not run for its row. `parent`
  // is a plain integer, not a reference: a run copied alone (`spool migrate --run`) need not bring its pipeline's.
  `
  ALTER TABLE runs ADD COLUMN parent INTEGER;
  ALTER TABLE runs ADD COLUMN step TEXT;
  CREATE INDEX runs_parent ON runs (parent, id);
  `,
  // prompt caching (issue 20, README "Paying less"): the input tokens a call wrote to the provider's prompt cache (a
  // part of input_tokens, billed at the cache-write price), on items (the batch-priced part apart, as the cached
  // ones), attempts and tallies, and the tally trigger of migration 7 counting them too. `primes`: a run's priming
  // calls, each one request sent before a batch so that the batch's requests read their shared prefix from the
  // cache; they belong to the run, not to an item, and an answered one's tokens are paid (reads.ts `summary`).
  `
  ALTER TABLE items ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE items ADD COLUMN batch_write_tokens INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE attempts ADD COLUMN cache_write_tokens INTEGER;
  ALTER TABLE tallies ADD COLUMN cache_write_tokens INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE tallies ADD COLUMN batch_write_tokens INTEGER NOT NULL DEFAULT 0;
  DROP TRIGGER items_tally;
  CREATE TRIGGER items_tally AFTER UPDATE OF state, attempts, input_tokens, output_tokens, cached_input_tokens,
    batch_input_tokens, batch_output_tokens, batch_cached_tokens, cache_write_tokens, batch_write_tokens ON items
    WHEN old.state NOT IN ('queued', 'submitted') AND new.state NOT IN ('queued', 'submitted')
    AND NOT (old.state = 'pending' AND new.state = 'completed')
  BEGIN
    UPDATE tallies SET n = n - 1, attempts = attempts - old.attempts, input_tokens = input_tokens - old.input_tokens,
      output_tokens = output_tokens - old.output_tokens,
      cached_input_tokens = cached_input_tokens - old.cached_input_tokens,
      batch_input_tokens = batch_input_tokens - old.batch_input_tokens,
      batch_output_tokens = batch_output_tokens - old.batch_output_tokens,
      batch_cached_tokens = batch_cached_tokens - old.batch_cached_tokens,
      cache_write_tokens = cache_write_tokens - old.cache_write_tokens,
      batch_write_tokens = batch_write_tokens - old.batch_write_tokens
      WHERE run_id = old.run_id AND state = old.state;
    INSERT INTO tallies VALUES (new.run_id, new.state, 1, new.attempts, new.input_tokens, new.output_tokens,
      new.cached_input_tokens, new.batch_input_tokens, new.batch_output_tokens, new.batch_cached_tokens,
      new.cache_write_tokens, new.batch_write_tokens)
      ON CONFLICT (run_id, state) DO UPDATE SET n = n + 1, attempts = attempts + excluded.attempts,
      input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
      cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
      batch_input_tokens = batch_input_tokens + excluded.batch_input_tokens,
      batch_output_tokens = batch_output_tokens + excluded.batch_output_tokens,
      batch_cached_tokens = batch_cached_tokens + excluded.batch_cached_tokens,
      cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
      batch_write_tokens = batch_write_tokens + excluded.batch_write_tokens;
  END;
  CREATE TABLE primes (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id),
    prefix TEXT NOT NULL,
    batch_id INTEGER,
    owner TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    http_status INTEGER,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cached_input_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    latency_ms INTEGER NOT NULL
  );
  CREATE INDEX primes_run ON primes (run_id, prefix, ended_at);
  `,
]
