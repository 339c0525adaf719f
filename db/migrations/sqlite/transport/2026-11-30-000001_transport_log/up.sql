-- The embedded default's in-process transport and memory store, kept across restarts
-- (`alpha_panda_db::embedded`): what `actors::journal` hands over, one table per kind.

-- Topics and their partition counts.
CREATE TABLE topics (
    topic text PRIMARY KEY,
    partitions integer NOT NULL
);

-- Every record appended, by (topic, partition, offset). Headers are JSON.
CREATE TABLE log (
    topic text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    key blob,
    value blob,
    headers text NOT NULL,
    PRIMARY KEY (topic, partition, "offset")
) WITHOUT ROWID;

-- Each consumer group's committed offset per partition.
CREATE TABLE committed (
    grp text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    next_offset bigint NOT NULL,
    PRIMARY KEY (grp, topic, partition)
) WITHOUT ROWID;

-- Store values: checkpoints, effects' results, trading states and pauses.
CREATE TABLE kv (
    key text PRIMARY KEY,
    value text NOT NULL
) WITHOUT ROWID;

-- Dedup marks with their expiry (Unix ms); rowid gives their age.
CREATE TABLE marks (
    key text NOT NULL UNIQUE,
    expires_unix_ms bigint NOT NULL
);

-- Input partitions' watermarks per source.
CREATE TABLE watermarks (
    key text NOT NULL,
    source text NOT NULL,
    "offset" bigint NOT NULL,
    ordinal bigint NOT NULL,
    PRIMARY KEY (key, source)
) WITHOUT ROWID;
