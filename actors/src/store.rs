//! The key-value store behind dedup and stage state: Redis in production, memory on the
//! embedded default. One contract for both:
//!
//! - `is_marked(key)`: has this event id been processed by this consumer group?
//! - `mark(key, ttl, effects)`: record it as processed **and** apply the handler's store
//!   effects, atomically (one Lua script in Redis). Either both happen or neither, so a crash
//!   between them cannot apply an effect twice or mark an event whose effect was lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alpha_panda_core::{Classify, FailureClass};
use redis::aio::ConnectionManager;

/// A write a handler asks for, applied together with the dedup mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `INCRBY key by`.
    IncrBy { key: String, by: i64 },
    /// `SET key value` (no expiry).
    Set { key: String, value: String },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis at {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        source: redis::RedisError,
    },
    #[error("Redis at {url} timed out: {source}")]
    Timeout {
        url: String,
        source: redis::RedisError,
    },
    #[error("Redis at {url} refused the command: {source}")]
    Refused {
        url: String,
        source: redis::RedisError,
    },
}

impl Classify for StoreError {
    fn class(&self) -> FailureClass {
        match self {
            StoreError::Timeout { .. } => FailureClass::Transient,
            StoreError::Unreachable { .. } | StoreError::Refused { .. } => {
                FailureClass::Infrastructure
            }
        }
    }
}

/// Marks the dedup key with a TTL if it is not set, and only then applies the effects.
/// KEYS[1] = dedup key, KEYS[2..] = effect keys; ARGV[1] = ttl ms, then per effect: op, arg.
const MARK_SCRIPT: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  for i = 2, #KEYS do
    local op, arg = ARGV[2 * i - 2], ARGV[2 * i - 1]
    if op == 'incrby' then
      redis.call('INCRBY', KEYS[i], arg)
    elseif op == 'set' then
      redis.call('SET', KEYS[i], arg)
    else
      return redis.error_reply('unknown effect ' .. op)
    end
  end
  return 1
end
return 0
";

/// Advances an input partition's watermark for one source if the position is beyond it, and
/// only then applies the effects. KEYS[1] = watermark hash, KEYS[2..] = effect keys;
/// ARGV[1] = source, ARGV[2] = offset, ARGV[3] = ordinal, then per effect: op, arg.
const ADVANCE_SCRIPT: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local o, n = tonumber(ARGV[2]), tonumber(ARGV[3])
if cur then
  local sep = string.find(cur, ':', 1, true)
  local co, cn = tonumber(string.sub(cur, 1, sep - 1)), tonumber(string.sub(cur, sep + 1))
  if o < co or (o == co and n <= cn) then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
for i = 2, #KEYS do
  local op, arg = ARGV[2 * i], ARGV[2 * i + 1]
  if op == 'incrby' then
    redis.call('INCRBY', KEYS[i], arg)
  elseif op == 'set' then
    redis.call('SET', KEYS[i], arg)
  else
    return redis.error_reply('unknown effect ' .. op)
  end
end
return 1
";

/// Writes a checkpoint if the store still holds the version the writer started from
/// (compare-and-set), and only then its parts, marks and effects. KEYS[1] = head, KEYS[2] =
/// version, KEYS[3] = parts hash, KEYS[4..] = mark keys, then effect keys; ARGV[1] = expected
/// version, ARGV[2] = head, ARGV[3] = number of parts, ARGV[4] = number of marks, ARGV[5] =
/// mark ttl ms, ARGV[6] = 1 if the parts written replace every part, then per part: name,
/// value (empty: removed), then per mark: value, then per effect: op, arg. Returns -1 when
/// written, else the version the store holds.
const CHECKPOINT_SCRIPT: &str = r"
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur ~= tonumber(ARGV[1]) then
  return cur
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], cur + 1)
local nparts, nmarks = tonumber(ARGV[3]), tonumber(ARGV[4])
if ARGV[6] == '1' then
  redis.call('DEL', KEYS[3])
end
local a = 7
for i = 1, nparts do
  if ARGV[a + 1] == '' then
    redis.call('HDEL', KEYS[3], ARGV[a])
  else
    redis.call('HSET', KEYS[3], ARGV[a], ARGV[a + 1])
  end
  a = a + 2
end
for i = 1, nmarks do
  redis.call('SET', KEYS[3 + i], ARGV[a], 'NX', 'PX', ARGV[5])
  a = a + 1
end
for k = 4 + nmarks, #KEYS do
  local op, arg = ARGV[a], ARGV[a + 1]
  a = a + 2
  if op == 'incrby' then
    redis.call('INCRBY', KEYS[k], arg)
  elseif op == 'set' then
    redis.call('SET', KEYS[k], arg)
  else
    return redis.error_reply('unknown effect ' .. op)
  end
end
return -1
";

/// A checkpoint as the store holds it: its head (offsets, watermarks, a stage's state
/// outside parts), the version of the write that made it and its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub head: String,
    /// Bumped by every write; 0 for a checkpoint written before versions were kept.
    pub version: u64,
    /// Name and value of each part, sorted by name.
    pub parts: Vec<(String, String)>,
}

/// One checkpoint write: the head, the parts that changed (`None`: removed), the dedup marks
/// of the batch's foreign records (key and the value to mark it with, if not marked yet) and
/// the batch's effects. It is made only over version `expected`.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointWrite<'a> {
    pub key: &'a str,
    pub head: &'a str,
    pub expected: u64,
    pub parts: &'a [(String, Option<String>)],
    /// `parts` are every part: any other the store holds is removed (a unit that starts
    /// afresh, or writes its own checkpoint over another's).
    pub replace_parts: bool,
    pub marks: &'a [(String, String)],
    pub ttl: Duration,
    pub effects: &'a [Effect],
}

/// What a checkpoint write came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written: the store now holds version `expected + 1`.
    Done,
    /// Another writer wrote since version `expected`, and the store holds this version;
    /// nothing was changed.
    Superseded(u64),
}

/// The store key of a checkpoint's version.
fn version_key(key: &str) -> String {
    format!("{key}:version")
}

/// The store key of a checkpoint's parts (a Redis hash; the memory store prefixes each
/// part's key with it).
fn parts_key(key: &str) -> String {
    format!("{key}:parts")
}

/// An input partition's watermarks: source → highest position applied.
pub type Watermarks = HashMap<String, crate::delivery::origin::Position>;

#[derive(Clone)]
// Made once per process and cloned into each stage: its size does not matter, and call
// sites stay plain.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Redis(RedisStore),
    Memory(MemoryStore),
}

impl Store {
    pub async fn is_marked(&self, key: &str) -> Result<bool, StoreError> {
        match self {
            Store::Redis(r) => r.is_marked(key).await,
            Store::Memory(m) => Ok(m.is_marked(key)),
        }
    }

    /// Returns whether this call set the mark (false: it was already there and the effects
    /// were not applied again).
    pub async fn mark(
        &self,
        key: &str,
        ttl: Duration,
        effects: &[Effect],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Redis(r) => r.mark(key, ttl, effects).await,
            Store::Memory(m) => Ok(m.mark(key, ttl, effects)),
        }
    }

    /// The watermarks of an input partition (empty if it has none yet).
    pub async fn watermarks(&self, key: &str) -> Result<Watermarks, StoreError> {
        match self {
            Store::Redis(r) => r.watermarks(key).await,
            Store::Memory(m) => Ok(m.watermarks(key)),
        }
    }

    /// Advances the watermark of `source` in `key` to `position` **together with** the
    /// handler's effects, atomically, if `position` is beyond it. Returns whether it did
    /// (false: a record at or below the watermark was applied already; nothing changed).
    pub async fn advance(
        &self,
        key: &str,
        source: &str,
        position: crate::delivery::origin::Position,
        effects: &[Effect],
    ) -> Result<bool, StoreError> {
        match self {
            Store::Redis(r) => r.advance(key, source, position, effects).await,
            Store::Memory(m) => Ok(m.advance(key, source, position, effects)),
        }
    }

    /// The marks of these dedup keys, in one round trip: `None` where a key is not marked,
    /// else the value it was marked with (a checkpointed unit's marks hold the input
    /// position of the record that made them; a per-record mark holds `1`).
    pub async fn marked(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Redis(r) => r.marked(keys).await,
            Store::Memory(m) => Ok(keys.iter().map(|k| m.mark_of(k)).collect()),
        }
    }

    /// Writes a checkpoint **together with** its parts, the dedup marks of the batch's
    /// foreign records and the batch's effects, atomically (one script in Redis), if the
    /// store still holds version `expected` of it: a writer that lost the unit to another
    /// (a zombie) cannot move a checkpoint back, nor mix its parts with another's.
    pub async fn save_checkpoint(&self, w: &CheckpointWrite<'_>) -> Result<Written, StoreError> {
        match self {
            Store::Redis(r) => r.save_checkpoint(w).await,
            Store::Memory(m) => Ok(m.save_checkpoint(w)),
        }
    }

    /// Reads a checkpoint (head, version and parts) in one round trip; `None` if there is
    /// none.
    pub async fn load_checkpoint(&self, key: &str) -> Result<Option<StoredCheckpoint>, StoreError> {
        match self {
            Store::Redis(r) => r.load_checkpoint(key).await,
            Store::Memory(m) => Ok(m.load_checkpoint(key)),
        }
    }

    /// Reads a string value from a thread outside any async runtime (a Kafka rebalance
    /// callback), waiting at most `timeout`.
    pub fn get_blocking(&self, key: &str, timeout: Duration) -> Result<Option<String>, StoreError> {
        match self {
            Store::Redis(r) => {
                let mut conn = r
                    .client
                    .get_connection_with_timeout(timeout)
                    .map_err(|e| r.classify(e))?;
                conn.set_read_timeout(Some(timeout))
                    .and_then(|()| conn.set_write_timeout(Some(timeout)))
                    .map_err(|e| r.classify(e))?;
                redis::cmd("GET")
                    .arg(key)
                    .query(&mut conn)
                    .map_err(|e| r.classify(e))
            }
            Store::Memory(m) => Ok(m.get(key)),
        }
    }

    /// Reads a string value (state written by effects).
    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Store::Redis(r) => r.get(key).await,
            Store::Memory(m) => Ok(m.get(key)),
        }
    }

    /// Writes a value outside any record's effects (operator and supervision state).
    pub async fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => r.set(key, value).await,
            Store::Memory(m) => {
                m.set(key, value);
                Ok(())
            }
        }
    }

    /// Reserves the next `n` numbers of the counter at `key` (`INCRBY`): returns the first;
    /// the block is `first..first + n`, never handed out again (feed sequences).
    pub async fn reserve(&self, key: &str, n: i64) -> Result<i64, StoreError> {
        match self {
            Store::Redis(r) => r.reserve(key, n).await,
            Store::Memory(m) => Ok(m.reserve(key, n)),
        }
    }

    /// Whether the store answers (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => r.ping().await,
            Store::Memory(_) => Ok(()),
        }
    }

    /// `redis` or `memory`, for status pages.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Redis(_) => "redis",
            Store::Memory(_) => "memory",
        }
    }
}

#[derive(Clone)]
pub struct RedisStore {
    url: String,
    conn: ConnectionManager,
    script: redis::Script,
    advance: redis::Script,
    checkpoint: redis::Script,
    /// For the few reads made outside any async runtime (a consumer's rebalance callback).
    client: redis::Client,
}

impl RedisStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let shown = alpha_panda_config::mask::url(url);
        let client = redis::Client::open(url).map_err(|source| StoreError::Refused {
            url: shown.clone(),
            source,
        })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(2))
            // redis 0.32 feeds `factor` to backon as the growth multiplier (from a 1 s
            // start): the default of 100 made one reconnect take about two minutes while
            // Redis was down (measured). Retry briefly instead; the delivery worker restarts
            // with its own backoff and tries again.
            .set_factor(2)
            .set_max_delay(500)
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|source| StoreError::Unreachable {
                url: shown.clone(),
                source,
            })?;
        Ok(Self {
            url: shown,
            conn,
            script: redis::Script::new(MARK_SCRIPT),
            advance: redis::Script::new(ADVANCE_SCRIPT),
            checkpoint: redis::Script::new(CHECKPOINT_SCRIPT),
            client,
        })
    }

    fn classify(&self, source: redis::RedisError) -> StoreError {
        let url = self.url.clone();
        if source.is_timeout() {
            StoreError::Timeout { url, source }
        } else if source.is_io_error()
            || source.is_connection_dropped()
            || source.is_connection_refusal()
            || source.is_unrecoverable_error()
        {
            StoreError::Unreachable { url, source }
        } else {
            StoreError::Refused { url, source }
        }
    }

    async fn is_marked(&self, key: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<i64>(&mut conn)
            .await
            .map(|n| n > 0)
            .map_err(|e| self.classify(e))
    }

    async fn mark(&self, key: &str, ttl: Duration, effects: &[Effect]) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.script.key(key);
        inv.arg(ttl.as_millis().max(1) as u64);
        for e in effects {
            match e {
                Effect::IncrBy { key, by } => inv.key(key).arg("incrby").arg(*by),
                Effect::Set { key, value } => inv.key(key).arg("set").arg(value),
            };
        }
        inv.invoke_async::<i64>(&mut conn)
            .await
            .map(|n| n == 1)
            .map_err(|e| self.classify(e))
    }

    async fn watermarks(&self, key: &str) -> Result<Watermarks, StoreError> {
        let mut conn = self.conn.clone();
        let raw: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.classify(e))?;
        Ok(decode_watermarks(raw))
    }

    async fn advance(
        &self,
        key: &str,
        source: &str,
        (offset, ordinal): crate::delivery::origin::Position,
        effects: &[Effect],
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.advance.key(key);
        inv.arg(source).arg(offset).arg(ordinal);
        for e in effects {
            match e {
                Effect::IncrBy { key, by } => inv.key(key).arg("incrby").arg(*by),
                Effect::Set { key, value } => inv.key(key).arg("set").arg(value),
            };
        }
        inv.invoke_async::<i64>(&mut conn)
            .await
            .map(|n| n == 1)
            .map_err(|e| self.classify(e))
    }

    async fn marked(&self, keys: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.get(k);
        }
        pipe.query_async::<Vec<Option<String>>>(&mut conn)
            .await
            .map_err(|e| self.classify(e))
    }

    async fn save_checkpoint(&self, w: &CheckpointWrite<'_>) -> Result<Written, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.checkpoint.key(w.key);
        inv.key(version_key(w.key)).key(parts_key(w.key));
        inv.arg(w.expected)
            .arg(w.head)
            .arg(w.parts.len())
            .arg(w.marks.len())
            .arg(w.ttl.as_millis().max(1) as u64)
            .arg(if w.replace_parts { "1" } else { "0" });
        for (name, value) in w.parts {
            inv.arg(name).arg(value.as_deref().unwrap_or(""));
        }
        for (m, value) in w.marks {
            inv.key(m).arg(value);
        }
        for e in w.effects {
            match e {
                Effect::IncrBy { key, by } => inv.key(key).arg("incrby").arg(*by),
                Effect::Set { key, value } => inv.key(key).arg("set").arg(value),
            };
        }
        inv.invoke_async::<i64>(&mut conn)
            .await
            .map(|n| {
                if n < 0 {
                    Written::Done
                } else {
                    Written::Superseded(n as u64)
                }
            })
            .map_err(|e| self.classify(e))
    }

    async fn load_checkpoint(&self, key: &str) -> Result<Option<StoredCheckpoint>, StoreError> {
        let mut conn = self.conn.clone();
        let (head, version, parts): (Option<String>, Option<u64>, Vec<(String, String)>) =
            redis::pipe()
                .atomic()
                .get(key)
                .get(version_key(key))
                .hgetall(parts_key(key))
                .query_async(&mut conn)
                .await
                .map_err(|e| self.classify(e))?;
        Ok(head.map(|head| {
            let mut parts = parts;
            parts.sort();
            StoredCheckpoint {
                head,
                version: version.unwrap_or(0),
                parts,
            }
        }))
    }

    async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.idempotent(&cmd).await
    }

    async fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        self.idempotent(&cmd).await
    }

    /// Runs a command that may safely run twice (a plain GET or SET: an operator's pause, a
    /// trading state), once more if the connection had dropped. The client finds a dropped
    /// connection only when a command fails on it (after a Redis restart, say), and
    /// reconnects for the next: without this, the first admin call after Redis came back
    /// failed with "broken pipe". Scripts with marks and compare-and-set are not retried here.
    async fn idempotent<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        match cmd.query_async::<T>(&mut conn).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                tracing::debug!(url = %self.url, error = %e, "the Redis connection had dropped; trying once more");
                let mut conn = self.conn.clone();
                cmd.query_async::<T>(&mut conn)
                    .await
                    .map_err(|e| self.classify(e))
            }
            r => r.map_err(|e| self.classify(e)),
        }
    }

    async fn reserve(&self, key: &str, n: i64) -> Result<i64, StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("INCRBY")
            .arg(key)
            .arg(n)
            .query_async::<i64>(&mut conn)
            .await
            .map(|end| end - n)
            .map_err(|e| self.classify(e))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| self.classify(e))
    }
}

/// Most dedup marks the in-memory store remembers. In-process redelivery only happens to the
/// few records in flight when a member stops, so a window of a million is ample, and it
/// keeps a daemon that runs for weeks within a bounded size.
pub const MAX_MEMORY_MARKS: usize = 1_000_000;

/// The embedded default's store: a map with expiry, shared by every stage of the process.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
    /// Where every change is journalled (the embedded default's data directory); `None`:
    /// memory only.
    journal: Option<crate::journal::SharedJournal>,
}

#[derive(Default)]
struct MemoryInner {
    marks: HashMap<String, Instant>,
    /// The value a checkpoint marked a key with (the record's input position), while the
    /// mark lives. Not journalled: a mark restored from the journal reads as `1`.
    mark_values: HashMap<String, String>,
    /// Marks in the order they were made, to forget the oldest beyond `MAX_MEMORY_MARKS`.
    order: std::collections::VecDeque<String>,
    values: HashMap<String, String>,
    watermarks: HashMap<String, Watermarks>,
}

/// Watermarks as stored; an entry that does not read as a position is left out (and so
/// treated as no watermark: event ids still make a re-emission a duplicate downstream).
fn decode_watermarks(raw: HashMap<String, String>) -> Watermarks {
    raw.into_iter()
        .filter_map(|(k, v)| crate::delivery::origin::decode_position(&v).map(|p| (k, p)))
        .collect()
}

impl MemoryStore {
    /// A store rebuilt from what `journal` kept (values, unexpired marks, watermarks) that
    /// journals every further change (see `crate::journal`).
    pub fn journalled(
        journal: crate::journal::SharedJournal,
        restored: &crate::journal::Restored,
    ) -> Self {
        let now_ms = crate::journal::unix_ms_now();
        let now = Instant::now();
        let mut inner = MemoryInner {
            values: restored.values.iter().cloned().collect(),
            ..MemoryInner::default()
        };
        let live: Vec<&(String, i64)> = restored
            .marks
            .iter()
            .filter(|(_, exp)| *exp > now_ms)
            .collect();
        let skip = live.len().saturating_sub(MAX_MEMORY_MARKS);
        for (key, exp) in live.into_iter().skip(skip) {
            let left = Duration::from_millis(u64::try_from(exp - now_ms).unwrap_or(0));
            inner.marks.insert(key.clone(), now + left);
            inner.order.push_back(key.clone());
        }
        for (key, source, position) in &restored.watermarks {
            inner
                .watermarks
                .entry(key.clone())
                .or_default()
                .insert(source.clone(), *position);
        }
        Self {
            inner: Arc::new(Mutex::new(inner)),
            journal: Some(journal),
        }
    }

    /// Hands one change's ops to the journal (call with the lock held).
    fn journal(&self, ops: Vec<crate::journal::JournalOp>) {
        if let Some(j) = &self.journal
            && !ops.is_empty()
        {
            j.record(ops);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // A panic while holding this lock leaves plain maps in a usable state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_marked(&self, key: &str) -> bool {
        let inner = self.lock();
        inner
            .marks
            .get(key)
            .is_some_and(|exp| *exp > Instant::now())
    }

    /// The value `key` is marked with (`1` unless a checkpoint gave one), if marked.
    fn mark_of(&self, key: &str) -> Option<String> {
        let inner = self.lock();
        inner
            .marks
            .get(key)
            .filter(|exp| **exp > Instant::now())
            .map(|_| {
                inner
                    .mark_values
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| "1".to_owned())
            })
    }

    /// `INCRBY key n` (journalled like any effect); the first number of the block.
    fn reserve(&self, key: &str, n: i64) -> i64 {
        let mut inner = self.lock();
        let mut ops = Vec::new();
        let by = [Effect::IncrBy {
            key: key.to_owned(),
            by: n,
        }];
        self.apply_effects(&mut inner, &by, &mut ops);
        let end: i64 = inner
            .values
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(n);
        self.journal(ops);
        end - n
    }

    fn set(&self, key: &str, value: &str) {
        let mut inner = self.lock();
        inner.values.insert(key.to_owned(), value.to_owned());
        self.journal(vec![crate::journal::JournalOp::Value {
            key: key.to_owned(),
            value: value.to_owned(),
        }]);
    }

    fn mark(&self, key: &str, ttl: Duration, effects: &[Effect]) -> bool {
        let mut inner = self.lock();
        let mut ops = Vec::new();
        let marked = self.mark_locked(&mut inner, key, ttl, &mut ops);
        if marked {
            self.apply_effects(&mut inner, effects, &mut ops);
        }
        self.journal(ops);
        marked
    }

    /// Sets a mark unless it is set; notes the op for the journal.
    fn mark_locked(
        &self,
        inner: &mut MemoryInner,
        key: &str,
        ttl: Duration,
        ops: &mut Vec<crate::journal::JournalOp>,
    ) -> bool {
        let now = Instant::now();
        if inner.marks.get(key).is_some_and(|exp| *exp > now) {
            return false;
        }
        inner.marks.insert(key.to_owned(), now + ttl);
        inner.mark_values.remove(key);
        inner.order.push_back(key.to_owned());
        // A long-running embedded daemon marks every tick: remember a bounded window.
        while inner.order.len() > MAX_MEMORY_MARKS {
            if let Some(old) = inner.order.pop_front() {
                inner.marks.remove(&old);
                inner.mark_values.remove(&old);
            }
        }
        if self.journal.is_some() {
            ops.push(crate::journal::JournalOp::Mark {
                key: key.to_owned(),
                expires_unix_ms: crate::journal::unix_ms_now()
                    .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
            });
        }
        true
    }

    /// Applies effects to the values; notes each key's new value for the journal.
    fn apply_effects(
        &self,
        inner: &mut MemoryInner,
        effects: &[Effect],
        ops: &mut Vec<crate::journal::JournalOp>,
    ) {
        apply(&mut inner.values, effects);
        if self.journal.is_some() {
            for e in effects {
                let (Effect::IncrBy { key, .. } | Effect::Set { key, .. }) = e;
                if let Some(value) = inner.values.get(key) {
                    ops.push(crate::journal::JournalOp::Value {
                        key: key.clone(),
                        value: value.clone(),
                    });
                }
            }
        }
    }

    fn save_checkpoint(&self, w: &CheckpointWrite<'_>) -> Written {
        // One lock and one journal entry: the checkpoint, its parts, marks and effects are
        // one change, kept together or not at all.
        let mut inner = self.lock();
        let version = version_key(w.key);
        let current: u64 = inner
            .values
            .get(&version)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if current != w.expected {
            return Written::Superseded(current);
        }
        let mut ops = Vec::new();
        for (m, value) in w.marks {
            if self.mark_locked(&mut inner, m, w.ttl, &mut ops) {
                inner.mark_values.insert(m.clone(), value.clone());
            }
        }
        let prefix = parts_key(w.key);
        let mut values = vec![
            (w.key.to_owned(), w.head.to_owned()),
            (version, (current + 1).to_string()),
        ];
        if w.replace_parts {
            let others = format!("{prefix}:");
            values.extend(
                inner
                    .values
                    .keys()
                    .filter(|k| k.starts_with(&others))
                    .map(|k| (k.clone(), String::new())),
            );
        }
        for (name, value) in w.parts {
            // A removed part: no value.
            values.push((
                format!("{prefix}:{name}"),
                value.clone().unwrap_or_default(),
            ));
        }
        for (key, value) in values {
            if value.is_empty() {
                if inner.values.remove(&key).is_some() && self.journal.is_some() {
                    ops.push(crate::journal::JournalOp::Removed { key });
                }
                continue;
            }
            if self.journal.is_some() {
                ops.push(crate::journal::JournalOp::Value {
                    key: key.clone(),
                    value: value.clone(),
                });
            }
            inner.values.insert(key, value);
        }
        self.apply_effects(&mut inner, w.effects, &mut ops);
        self.journal(ops);
        Written::Done
    }

    fn load_checkpoint(&self, key: &str) -> Option<StoredCheckpoint> {
        let inner = self.lock();
        let head = inner.values.get(key)?.clone();
        let version = inner
            .values
            .get(&version_key(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let prefix = format!("{}:", parts_key(key));
        let mut parts: Vec<(String, String)> = inner
            .values
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_owned(), v.clone())))
            .collect();
        parts.sort();
        Some(StoredCheckpoint {
            head,
            version,
            parts,
        })
    }

    fn watermarks(&self, key: &str) -> Watermarks {
        self.lock().watermarks.get(key).cloned().unwrap_or_default()
    }

    fn advance(
        &self,
        key: &str,
        source: &str,
        position: crate::delivery::origin::Position,
        effects: &[Effect],
    ) -> bool {
        let mut inner = self.lock();
        let marks = inner.watermarks.entry(key.to_owned()).or_default();
        if marks.get(source).is_some_and(|p| *p >= position) {
            return false;
        }
        marks.insert(source.to_owned(), position);
        let mut ops = vec![crate::journal::JournalOp::Watermark {
            key: key.to_owned(),
            source: source.to_owned(),
            position,
        }];
        self.apply_effects(&mut inner, effects, &mut ops);
        self.journal(ops);
        true
    }

    fn get(&self, key: &str) -> Option<String> {
        self.lock().values.get(key).cloned()
    }

    /// Every key held (marks and values), sorted: for audits and isolation tests.
    pub fn keys(&self) -> Vec<String> {
        let inner = self.lock();
        let mut keys: Vec<String> = inner
            .marks
            .keys()
            .chain(inner.values.keys())
            .chain(inner.watermarks.keys())
            .cloned()
            .collect();
        keys.sort();
        keys
    }
}

/// Applies effects to the memory store's values.
fn apply(values: &mut HashMap<String, String>, effects: &[Effect]) {
    for e in effects {
        match e {
            Effect::IncrBy { key, by } => {
                let cur: i64 = values.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
                values.insert(key.clone(), (cur + by).to_string());
            }
            Effect::Set { key, value } => {
                values.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The dedup key of an event processed by a consumer group: `{broker}:dedup:{group}:{id}`.
pub fn dedup_key(namespace: &str, group: &str, event_id: &uuid::Uuid) -> String {
    format!("{namespace}:dedup:{group}:{event_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_marks_once_and_applies_effects_once() {
        let s = MemoryStore::default();
        let fx = [Effect::IncrBy {
            key: "c".into(),
            by: 2,
        }];
        assert!(!s.is_marked("k"));
        assert!(s.mark("k", Duration::from_secs(60), &fx));
        assert!(s.is_marked("k"));
        assert!(!s.mark("k", Duration::from_secs(60), &fx));
        assert_eq!(s.get("c").as_deref(), Some("2"));
    }

    #[test]
    fn memory_marks_are_a_bounded_window() {
        let s = MemoryStore::default();
        for i in 0..MAX_MEMORY_MARKS + 10 {
            s.mark(&i.to_string(), Duration::from_secs(60), &[]);
        }
        assert!(!s.is_marked("0"), "the oldest are forgotten");
        assert!(s.is_marked(&(MAX_MEMORY_MARKS + 9).to_string()));
        assert_eq!(s.lock().marks.len(), MAX_MEMORY_MARKS);
    }

    #[test]
    fn memory_watermarks_advance_only_forward_and_apply_effects_once() {
        let s = MemoryStore::default();
        let fx = [Effect::IncrBy {
            key: "c".into(),
            by: 1,
        }];
        assert!(s.advance("w", "src", (5, 0), &fx));
        assert!(!s.advance("w", "src", (5, 0), &fx), "the same origin again");
        assert!(!s.advance("w", "src", (4, 3), &fx), "an older origin");
        assert!(s.advance("w", "src", (5, 1), &fx));
        assert!(s.advance("w", "other", (1, 0), &fx), "sources are apart");
        assert_eq!(s.get("c").as_deref(), Some("3"));
        assert_eq!(s.watermarks("w").get("src"), Some(&(5, 1)));
    }

    #[test]
    fn a_checkpoint_is_written_only_over_the_version_its_writer_started_from() {
        let s = MemoryStore::default();
        let fx = [Effect::IncrBy {
            key: "c".into(),
            by: 1,
        }];
        let marks = [("m".to_owned(), "t/0@3".to_owned())];
        let save = |head: &str, expected: u64, part: &str| {
            s.save_checkpoint(&CheckpointWrite {
                key: "cp",
                head,
                expected,
                parts: &[(part.to_owned(), Some(head.to_owned()))],
                replace_parts: false,
                marks: &marks,
                ttl: Duration::from_secs(60),
                effects: &fx,
            })
        };
        // Two members load "no checkpoint" (version 0); the first to write wins.
        assert_eq!(save("a1", 0, "a"), Written::Done);
        assert_eq!(save("b1", 0, "b"), Written::Superseded(1));
        assert_eq!(save("a2", 1, "a"), Written::Done);
        // A zombie still at version 1 moves nothing back, and applies no effect.
        assert_eq!(save("z", 1, "z"), Written::Superseded(2));
        let cp = s.load_checkpoint("cp").unwrap();
        assert_eq!(cp.head, "a2");
        assert_eq!(cp.version, 2);
        assert_eq!(cp.parts, vec![("a".to_owned(), "a2".to_owned())]);
        assert_eq!(
            s.get("c").as_deref(),
            Some("2"),
            "the two writes' effects only"
        );
        assert!(s.load_checkpoint("other").is_none());
        // A write that replaces the parts leaves only its own.
        let w = CheckpointWrite {
            key: "cp",
            head: "a3",
            expected: 2,
            parts: &[("b".to_owned(), Some("[3]".to_owned()))],
            replace_parts: true,
            marks: &[],
            ttl: Duration::from_secs(60),
            effects: &[],
        };
        assert_eq!(s.save_checkpoint(&w), Written::Done);
        let cp = s.load_checkpoint("cp").unwrap();
        assert_eq!(cp.parts, vec![("b".to_owned(), "[3]".to_owned())]);
    }

    #[test]
    fn memory_marks_expire() {
        let s = MemoryStore::default();
        assert!(s.mark("k", Duration::from_millis(1), &[]));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!s.is_marked("k"));
        assert!(s.mark("k", Duration::from_secs(1), &[]));
    }
}
