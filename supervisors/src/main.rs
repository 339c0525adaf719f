//! The `alpha-panda` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use alpha_panda_config::{ConfigError, LogFormat, Settings, load_from_env, mask};
use alpha_panda_topics::topics_for;
use anyhow::Context;
use clap::{Parser, Subcommand};

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
    Run,
    /// Kafka topics of the active brokers.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Settings.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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
        Command::Run => {
            if let Err(e) = init_logging(&settings) {
                eprintln!("alpha-panda: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            alpha_panda_supervisors::daemon::run(settings)
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
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
    Ok(())
}

fn topics(s: &Settings, command: TopicsCommand) -> anyhow::Result<()> {
    let servers = s.kafka.bootstrap_servers.as_deref().context(
        "no Kafka configured: set kafka.bootstrap_servers (or ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS); \
         the in-process transport needs no topics",
    )?;
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
