//! The `alpha-panda` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use alpha_panda_config::{ConfigError, LogFormat, Settings, load_from_env, mask};
use alpha_panda_supervisors::backtest::input::BadRows;
use alpha_panda_topics::topics_for;
use anyhow::Context;
use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: the stages allocate and free many small
/// values per event (ids, keys, payload strings), which glibc's malloc served at about a
/// sixth of a backtest's CPU time (docs/performance.md, "Backtest").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "alpha-panda",
    version,
    about = "Alpha Panda: an event-sourced trading runtime"
)]
struct Cli {
    /// TOML settings file; the environment (ALPHA_PANDA__SECTION__KEY) overrides it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Keep nothing between runs: without Kafka, the log, checkpoints and books live in
        /// memory only (by default they are kept in `data_dir`).
        #[arg(long)]
        ephemeral: bool,
    },
    /// Kafka topics of the active brokers.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Replay a tick file through the same stages in-process, as fast as possible.
    Backtest {
        /// CSV (instrument_token,timestamp,last_price[,volume]) or JSONL tick file.
        #[arg(long, value_name = "FILE")]
        ticks: PathBuf,
        /// Where fills.jsonl, summary.json and report.html (or sweep.json) go.
        #[arg(long, value_name = "DIR", default_value = "backtest-out")]
        out: PathBuf,
        /// Skip rows that cannot be read (counted and reported) instead of stopping.
        #[arg(long)]
        skip_bad_rows: bool,
        /// Run once per combination of values, in parallel: PATH=V1,V2,… (repeatable),
        /// e.g. strategies.0.params.fast=5,10,20.
        #[arg(long, value_name = "PATH=V1,V2,…")]
        sweep: Vec<String>,
    },
    /// Dead-letter topics: inspect and replay.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The database of `database.url`: migrations.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Strategies stored in the database (PostgreSQL).
    Strategies {
        #[command(subcommand)]
        command: StrategiesCommand,
    },
    /// The trade book recorded in the database.
    Trades {
        #[command(subcommand)]
        command: TradesCommand,
    },
    /// Settings.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Zerodha Kite Connect: the daily login of the active zerodha broker.
    Kite {
        #[command(subcommand)]
        command: KiteCommand,
    },
    /// A Kite Connect simulator (REST and ticker) on loopback, to rehearse a live day.
    KiteSim {
        /// Address of both the REST API and the ticker.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8765")]
        listen: std::net::SocketAddr,
        /// Milliseconds between the simulator's ticks.
        #[arg(long, default_value_t = 1000)]
        tick_ms: u64,
    },
}

#[derive(Subcommand)]
enum KiteCommand {
    /// Print the address where the user logs in to Kite; it redirects with a request token.
    LoginUrl,
    /// Exchange a request token for an access token and store it (broker-prefixed) in Redis.
    Session {
        #[arg(long, value_name = "T")]
        request_token: String,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create every topic of the active brokers that does not exist yet.
    Ensure,
    /// Show the topics of the active brokers and whether each exists.
    List,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Show the records of a DLQ topic from the beginning.
    List {
        /// The DLQ topic, e.g. paper.signals.raw.dlq.
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Republish DLQ records not replayed before to their original topics, each with a new
    /// id and a dlq_origin header; progress is committed, so a second run replays nothing twice.
    Replay {
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = usize::MAX)]
        limit: usize,
        /// Show what would be replayed; publish and commit nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Apply every pending migration (shared tables, then each defined broker's schema and
    /// writer role) and print what was applied; applying twice changes nothing.
    Migrate,
    /// Show every migration of each schema and whether it is applied.
    Status,
}

#[derive(Subcommand)]
enum StrategiesCommand {
    /// Validate the `[[strategies]]` of a TOML file with the start-up rules and replace the
    /// stored set with them (one transaction).
    Import {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the stored strategies as `[[strategies]]` TOML.
    Export,
}

/// A file of `[[strategies]]`, as `strategies import` reads and `export` writes it.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StrategiesFile {
    strategies: Vec<alpha_panda_config::StrategySettings>,
}

#[derive(Subcommand)]
enum TradesCommand {
    /// Fills with their charges broken down and realized PnL per round trip.
    Export {
        #[arg(long)]
        broker: String,
        #[arg(long)]
        strategy: Option<String>,
        /// First trade date (India Standard Time), YYYY-MM-DD.
        #[arg(long, value_name = "YYYY-MM-DD")]
        from: chrono::NaiveDate,
        /// Last trade date, included.
        #[arg(long, value_name = "YYYY-MM-DD")]
        to: chrono::NaiveDate,
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Csv,
    Json,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective settings (secrets masked), or say what is wrong (exit status 2).
    Check,
}

/// Exit status for a configuration a person must fix.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match load_from_env(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    let outcome = match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            emit(&mask::effective_toml(&settings));
            Ok(())
        }
        Command::Topics { command } => topics(&settings, command),
        Command::Db { command } => db(&settings, command),
        Command::Trades { command } => trades(&settings, command),
        Command::Strategies { command } => strategies(&settings, command),
        Command::Dlq { command } => dlq(&settings, command),
        Command::Backtest {
            ticks,
            out,
            skip_bad_rows,
            sweep,
        } => {
            let bad_rows = if skip_bad_rows {
                BadRows::Skip
            } else {
                BadRows::Stop
            };
            if sweep.is_empty() {
                backtest(settings, &ticks, &out, bad_rows)
            } else {
                backtest_sweep(&settings, &ticks, &out, bad_rows, &sweep)
            }
        }
        Command::Kite { command } => kite(&settings, command),
        Command::KiteSim { listen, tick_ms } => kite_sim(&settings, listen, tick_ms),
        Command::Run { ephemeral } => {
            let mut settings = settings;
            if settings.database.strategies_from_database {
                match stored_strategies(&settings) {
                    Ok(set) => settings.strategies = set,
                    Err(e) => {
                        eprintln!("alpha-panda: {e:#}");
                        return ExitCode::from(EXIT_CONFIG);
                    }
                }
            }
            if let Err(e) = alpha_panda_config::check_trading(&settings) {
                return config_error(&e);
            }
            if let Err(e) = init_logging(&settings) {
                eprintln!("alpha-panda: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            let keep = if ephemeral {
                alpha_panda_supervisors::daemon::Keep::Nothing
            } else {
                alpha_panda_supervisors::daemon::Keep::DataDir
            };
            let reload =
                alpha_panda_supervisors::reload::Source::of(&settings, cli.config.as_deref());
            alpha_panda_supervisors::daemon::run(settings, keep, reload)
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alpha-panda: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes command output; a closed pipe (`| head`) is not an error.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("alpha-panda: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn init_logging(s: &Settings) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&s.log.level).map_err(|e| {
        format!(
            "invalid configuration `log.level` = {:?}: {e} (expected a tracing filter such as info or alpha_panda=debug)",
            s.log.level
        )
    })?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match s.log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Pretty => builder.init(),
    }
    Ok(())
}

fn backtest_sweep(
    settings: &Settings,
    ticks: &std::path::Path,
    out: &std::path::Path,
    bad_rows: BadRows,
    sweep: &[String],
) -> anyhow::Result<()> {
    use alpha_panda_supervisors::backtest::sweep;
    let axes = sweep
        .iter()
        .map(|a| a.parse::<sweep::Axis>())
        .collect::<Result<Vec<_>, _>>()?;
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sweep::FileSweep {
        runs,
        rows,
        skipped,
    } = sweep::run_file(settings, &axes, ticks, bad_rows, threads)?;
    if skipped > 0 {
        eprintln!("alpha-panda: skipped {skipped} bad rows");
    }
    let secs = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(
        out.join("sweep.json"),
        serde_json::to_string_pretty(&runs)? + "\n",
    )?;
    let mut text = format!(
        "{} runs × {} ticks in {secs:.2} s ({:.0} ticks/s over all runs, {threads} threads) → {}\n\n{:>4} {:>12} {:>7}  params\n",
        runs.len(),
        rows,
        (runs.len() as u64 * rows) as f64 / secs.max(1e-9),
        out.join("sweep.json").display(),
        "run",
        "total_pnl",
        "trades"
    );
    for r in &runs {
        let params: Vec<String> = r.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text += &format!(
            "{:>4} {:>12} {:>7}  {}\n",
            r.run,
            r.total_pnl,
            r.trades,
            params.join(" ")
        );
    }
    emit(&text);
    Ok(())
}

fn backtest(
    settings: Settings,
    ticks: &std::path::Path,
    out: &std::path::Path,
    bad_rows: BadRows,
) -> anyhow::Result<()> {
    let options = alpha_panda_supervisors::backtest::Options {
        bad_rows,
        ..Default::default()
    };
    let report = alpha_panda_supervisors::backtest::run(settings, ticks, out, &options)?;
    let secs = report.elapsed.as_secs_f64();
    let skipped = if report.skipped_rows > 0 {
        format!(", {} bad rows skipped", report.skipped_rows)
    } else {
        String::new()
    };
    let mut text = format!(
        "{} ticks in {secs:.2} s ({:.0} ticks/s){skipped}, {} fills → {}\n\n{:<10} {:<20} {:>6} {:>12} {:>12} {:>10} {:>8} {:>12} {:>8}\n",
        report.ticks,
        report.ticks as f64 / secs.max(1e-9),
        report.fills.len(),
        out.display(),
        "broker",
        "strategy",
        "trades",
        "total_pnl",
        "realized",
        "fees",
        "win",
        "max_dd",
        "sharpe"
    );
    for s in &report.summaries {
        text += &format!(
            "{:<10} {:<20} {:>6} {:>12} {:>12} {:>10} {:>8} {:>12} {:>8}\n",
            s.broker,
            s.strategy_id,
            s.trades,
            s.total_pnl,
            s.realized_pnl,
            s.fees,
            s.win_rate,
            s.max_drawdown,
            s.sharpe
        );
    }
    emit(&text);
    Ok(())
}

fn kite(s: &Settings, command: KiteCommand) -> anyhow::Result<()> {
    use alpha_panda_supervisors::kite::{StoredSession, client, session_key, zerodha};
    let (broker, kite) = zerodha(s).context(
        "no active zerodha broker: set ACTIVE_BROKERS=paper,zerodha and brokers.zerodha.kite.api_key",
    )?;
    let kite_client = client(kite)?;
    match command {
        KiteCommand::LoginUrl => {
            emit(&format!("{}\n", kite_client.login_url()));
            Ok(())
        }
        KiteCommand::Session { request_token } => {
            let secret = kite.api_secret.as_deref().context(
                "brokers.NAME.kite.api_secret is not set (ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_SECRET)",
            )?;
            let url = s.redis.url.as_deref().context(
                "kite session stores the access token in Redis: set redis.url (the embedded store ends with this command)",
            )?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let session = kite_client
                    .generate_session(&request_token, secret)
                    .await
                    .context("exchanging the request token")?;
                let store = alpha_panda_actors::store::Store::Redis(
                    alpha_panda_actors::store::RedisStore::connect(url).await?,
                );
                let stored = StoredSession {
                    access_token: session.access_token.clone(),
                    login_time: chrono::Utc::now(),
                };
                store
                    .set(&session_key(broker.as_str()), &serde_json::to_string(&stored)?)
                    .await?;
                emit(&format!(
                    "session of {} stored for broker {} under {} (access token {}); valid until 06:00 IST\n",
                    session.user_id,
                    broker.as_str(),
                    session_key(broker.as_str()),
                    alpha_panda_kite::mask(&session.access_token)
                ));
                anyhow::Ok(())
            })
        }
    }
}

fn kite_sim(s: &Settings, listen: std::net::SocketAddr, tick_ms: u64) -> anyhow::Result<()> {
    use alpha_panda_kite::sim::{SimConfig, Simulator};
    let (key, secret) = alpha_panda_supervisors::kite::zerodha(s)
        .map(|(_, k)| {
            (
                k.api_key.clone().unwrap_or_else(|| "simkey".into()),
                k.api_secret.clone().unwrap_or_else(|| "simsecret".into()),
            )
        })
        .unwrap_or_else(|| ("simkey".into(), "simsecret".into()));
    let mut config = SimConfig::new(key.clone(), secret);
    config.tick_interval = std::time::Duration::from_millis(tick_ms.max(1));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sim = Simulator::start(listen, config)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        emit(&format!(
            "kite-sim on {addr} (api_key {key}): api_url = \"http://{addr}\", ticker_url = \"ws://{addr}\"\n\
             request tokens: curl http://{addr}/connect/login\n",
            addr = sim.addr()
        ));
        tokio::signal::ctrl_c().await?;
        anyhow::Ok(())
    })
}

fn kafka_servers(s: &Settings) -> anyhow::Result<&str> {
    s.kafka.bootstrap_servers.as_deref().context(
        "no Kafka configured: set kafka.bootstrap_servers (or ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS); \
         the in-process transport keeps no topics between runs",
    )
}

fn dlq(s: &Settings, command: DlqCommand) -> anyhow::Result<()> {
    use alpha_panda_actors::dlq_tools::{self, ReplayOutcome};
    let servers = kafka_servers(s)?;
    let (DlqCommand::List { topic, .. } | DlqCommand::Replay { topic, .. }) = &command;
    let dlq: alpha_panda_topics::TopicName = topic.parse()?;
    match command {
        DlqCommand::List { limit, .. } => {
            let entries = dlq_tools::list(servers, &s.kafka.client_id, &dlq, limit)?;
            let mut out = format!(
                "{:<12} {:<26} {:<14} {:>7} {:<16} {:<40} {}\n",
                "position", "failed_at", "class", "retries", "stage", "original", "error"
            );
            for e in &entries {
                let position = format!("{}:{}", e.partition, e.offset);
                match &e.record {
                    Ok((_, err)) => {
                        let original = format!(
                            "{}:{}:{}",
                            err.original_topic, err.original_partition, err.original_offset
                        );
                        let message: String = err.error_message.chars().take(80).collect();
                        out += &format!(
                            "{position:<12} {:<26} {:<14} {:>7} {:<16} {original:<40} {message}\n",
                            err.failed_at.to_string(),
                            err.error_class.as_str(),
                            err.retry_count,
                            err.stage,
                        );
                    }
                    Err(reason) => out += &format!("{position:<12} unreadable: {reason}\n"),
                }
            }
            out += &format!("{} record(s)\n", entries.len());
            emit(&out);
        }
        DlqCommand::Replay { limit, dry_run, .. } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(async {
                let producer = alpha_panda_actors::delivery::EventProducer::kafka_awaiting_each(
                    servers,
                    &s.kafka.client_id,
                    dlq_tools::REPLAY_GIVE_UP_AFTER,
                )?;
                anyhow::Ok(
                    dlq_tools::replay(
                        servers,
                        &s.kafka.client_id,
                        &s.kafka.group_prefix,
                        &producer,
                        &dlq,
                        limit,
                        dry_run,
                    )
                    .await?,
                )
            })?;
            let verb = if dry_run { "would replay" } else { "replayed" };
            let mut out = String::new();
            for (partition, offset, outcome) in &report.entries {
                match outcome {
                    ReplayOutcome::Replayed { topic, new_id } => {
                        out += &format!("{partition}:{offset} {verb} to {topic} as {new_id}\n")
                    }
                    ReplayOutcome::Skipped { reason } => {
                        out += &format!("{partition}:{offset} skipped: {reason}\n")
                    }
                }
            }
            out += &format!(
                "{} {verb}, {} skipped{}\n",
                report.replayed(),
                report.entries.len() - report.replayed(),
                if dry_run {
                    " (dry run: nothing published or committed)"
                } else {
                    ""
                }
            );
            emit(&out);
        }
    }
    Ok(())
}

fn database(s: &Settings) -> anyhow::Result<alpha_panda_db::Target> {
    alpha_panda_db::Target::from_settings(&s.database)?.context(
        "no database configured: set database.url (postgres://user@host:port/db or sqlite://DIRECTORY), \
         e.g. ALPHA_PANDA__DATABASE__URL",
    )
}

fn db(s: &Settings, command: DbCommand) -> anyhow::Result<()> {
    let target = database(s)?;
    let layout = alpha_panda_db::Layout::new(s.database.schema_prefix.clone());
    let brokers: Vec<_> = s.brokers.keys().cloned().collect();
    let mut out = String::new();
    match command {
        DbCommand::Migrate => {
            let report = alpha_panda_db::migrate::migrate(&target, &layout, &brokers)?;
            let applied: usize = report.iter().map(|r| r.applied.len()).sum();
            for r in &report {
                for m in &r.applied {
                    out += &format!("{}: applied {m}\n", r.scope);
                }
            }
            out += &format!(
                "{applied} migrations applied on {} ({} schemas up to date)\n",
                target.describe(),
                report.len()
            );
        }
        DbCommand::Status => {
            for r in alpha_panda_db::migrate::status(&target, &layout, &brokers)? {
                out += &r.to_string();
            }
        }
    }
    emit(&out);
    Ok(())
}

fn postgres_url(s: &Settings, what: &str) -> anyhow::Result<String> {
    match database(s)? {
        alpha_panda_db::Target::Postgres { url } => Ok(url),
        alpha_panda_db::Target::Sqlite { .. } => {
            anyhow::bail!("{what} needs PostgreSQL; database.url is a SQLite directory")
        }
    }
}

/// The stored strategies, held to the start-up rules.
fn stored_strategies(s: &Settings) -> anyhow::Result<Vec<alpha_panda_config::StrategySettings>> {
    let url = postgres_url(s, "database.strategies_from_database")?;
    let layout = alpha_panda_db::Layout::new(s.database.schema_prefix.clone());
    let set = alpha_panda_db::strategies::load_all(&url, &layout)?;
    anyhow::ensure!(
        !set.is_empty(),
        "database.strategies_from_database = true but no strategy is stored: run `alpha-panda strategies import FILE`"
    );
    let mut candidate = s.clone();
    candidate.strategies = set;
    check_strategies(&candidate, "the stored strategies")?;
    Ok(candidate.strategies)
}

fn check_strategies(candidate: &Settings, source: &str) -> anyhow::Result<()> {
    alpha_panda_config::validate_settings(candidate).map_err(|(key, value, problem)| {
        let value = value.map(|v| format!(" = {v}")).unwrap_or_default();
        anyhow::anyhow!("{source}: `{key}`{value}: {problem}")
    })
}

fn strategies(s: &Settings, command: StrategiesCommand) -> anyhow::Result<()> {
    let url = postgres_url(s, "strategies")?;
    let layout = alpha_panda_db::Layout::new(s.database.schema_prefix.clone());
    match command {
        StrategiesCommand::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let parsed: StrategiesFile = toml::from_str(&text)
                .with_context(|| format!("{} is not a file of [[strategies]]", file.display()))?;
            let mut candidate = s.clone();
            candidate.strategies = parsed.strategies;
            check_strategies(&candidate, &file.display().to_string())?;
            let by = std::env::var("USER").unwrap_or_else(|_| "alpha-panda".to_owned());
            let n =
                alpha_panda_db::strategies::replace_all(&url, &layout, &candidate.strategies, &by)?;
            emit(&format!(
                "{n} strategies stored in {}\n",
                layout.shared_schema()
            ));
        }
        StrategiesCommand::Export => {
            let strategies = alpha_panda_db::strategies::load_all(&url, &layout)?;
            emit(&toml::to_string(&StrategiesFile { strategies })?);
        }
    }
    Ok(())
}

fn trades(s: &Settings, command: TradesCommand) -> anyhow::Result<()> {
    let TradesCommand::Export {
        broker,
        strategy,
        from,
        to,
        format,
    } = command;
    let broker = alpha_panda_core::BrokerName::new(broker.clone())
        .map_err(|e| anyhow::anyhow!("--broker {broker:?}: {e}"))?;
    anyhow::ensure!(
        s.brokers.contains_key(&broker),
        "--broker {broker}: no such broker in the settings (defined: {})",
        s.brokers
            .keys()
            .map(|b| b.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    anyhow::ensure!(from <= to, "--from {from} is after --to {to}");
    let layout = alpha_panda_db::Layout::new(s.database.schema_prefix.clone());
    let query = alpha_panda_db::export::Query {
        broker,
        strategy,
        from,
        to,
    };
    // PostgreSQL or a `sqlite://DIR` database; without `database.url`, the broker files the
    // embedded default's recorder writes in the data directory.
    let fills = match alpha_panda_db::Target::from_settings(&s.database)? {
        Some(alpha_panda_db::Target::Postgres { url }) => {
            alpha_panda_db::export::load(&url, &layout, &query)?
        }
        Some(alpha_panda_db::Target::Sqlite { dir }) => {
            alpha_panda_db::export::load_sqlite(&dir, &layout, &query)?
        }
        None => alpha_panda_db::export::load_sqlite(&s.data_dir, &layout, &query)?,
    };
    let format = match format {
        ExportFormat::Csv => alpha_panda_db::export::Format::Csv,
        ExportFormat::Json => alpha_panda_db::export::Format::Json,
    };
    emit(&alpha_panda_db::export::render(&fills, format)?);
    Ok(())
}

fn topics(s: &Settings, command: TopicsCommand) -> anyhow::Result<()> {
    let servers = kafka_servers(s)?;
    let wanted = topics_for(&s.active_brokers);
    match command {
        TopicsCommand::Ensure => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(alpha_panda_actors::kafka::admin::ensure(
                servers,
                &s.kafka.client_id,
                &wanted,
            ))?;
            let created = report
                .iter()
                .filter(|(_, e)| {
                    matches!(e, alpha_panda_actors::kafka::admin::Ensured::Created { .. })
                })
                .count();
            let mut out = String::new();
            for (topic, outcome) in &report {
                out += &format!("{topic:<36} {outcome}\n");
            }
            out += &format!(
                "{created} created, {} already existed\n",
                report.len() - created
            );
            emit(&out);
        }
        TopicsCommand::List => {
            let existing = alpha_panda_actors::kafka::admin::describe(servers, &s.kafka.client_id)?;
            let mut out = format!(
                "{:<36} {:>10} {:>10} {:>14}\n",
                "topic", "partitions", "default", "retention_ms"
            );
            for topic in &wanted {
                let spec = topic.spec();
                let partitions = existing
                    .get(&topic.to_string())
                    .map_or_else(|| "missing".to_owned(), ToString::to_string);
                out += &format!(
                    "{topic:<36} {partitions:>10} {:>10} {:>14}\n",
                    spec.partitions, spec.retention_ms
                );
            }
            emit(&out);
        }
    }
    Ok(())
}
