//! Strategy reload: where a running daemon reads its new strategies (the database when
//! `database.strategies_from_database` is set, else the settings file read again with the
//! same layering as at start), how they are held to the start-up rules, and SIGHUP.
//!
//! Contract:
//! - Only the `[[strategies]]` of the source are taken; every other setting stays as the
//!   daemon started with it (a changed `kafka` or `risk` section needs a restart).
//! - The new set is the running settings with their strategies replaced, checked by the
//!   same `validate_settings` as start-up; a refusal lists every reason it can find, each
//!   naming its key (one per offending strategy, then the first other problem), and leaves
//!   the running set untouched.
//! - An accepted set is installed whole as the next generation of `strategy::Live`; the
//!   strategy stage switches to it between records.
//! - SIGHUP runs the same reloader on a blocking thread and is audited as `SIGHUP` by
//!   `signal` from `local`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alpha_panda_actors::audit::{AdminCall, AuditEvent};
use alpha_panda_actors::control::Control;
use alpha_panda_actors::reload::{Applied, Refused, Reloader};
use alpha_panda_actors::strategy::Live;
use alpha_panda_config::{Settings, StrategySettings};

/// Where a reload reads the strategies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The shared `strategies` table (PostgreSQL).
    Database {
        url: String,
        layout: alpha_panda_db::Layout,
    },
    /// The settings file the daemon started with (if any) and the environment, read again.
    Settings { file: Option<PathBuf> },
}

impl Source {
    /// The database when the daemon's strategies come from it, else the settings file.
    pub fn of(settings: &Settings, file: Option<&Path>) -> Self {
        if settings.database.strategies_from_database
            && let Ok(Some(alpha_panda_db::Target::Postgres { url })) =
                alpha_panda_db::Target::from_settings(&settings.database)
        {
            return Source::Database {
                url,
                layout: alpha_panda_db::Layout::new(settings.database.schema_prefix.clone()),
            };
        }
        Source::Settings {
            file: file.map(Path::to_path_buf),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::Database { layout, .. } => {
                format!("the database ({}.strategies)", layout.shared_schema())
            }
            Source::Settings { file: Some(f) } => format!("the settings file {}", f.display()),
            Source::Settings { file: None } => "the environment (no settings file)".to_owned(),
        }
    }

    /// The strategies of the source, or why they cannot be read.
    pub fn read(&self) -> Result<Vec<StrategySettings>, Vec<String>> {
        match self {
            Source::Database { url, layout } => {
                let set = alpha_panda_db::strategies::load_all(url, layout)
                    .map_err(|e| vec![e.to_string()])?;
                if set.is_empty() {
                    return Err(vec![
                        "no strategy is stored: run `alpha-panda strategies import FILE`"
                            .to_owned(),
                    ]);
                }
                Ok(set)
            }
            Source::Settings { file } => match alpha_panda_config::load_from_env(file.as_deref()) {
                Ok(s) => Ok(s.strategies),
                // The loader stops at the first problem; the file's strategies are read on
                // their own so that every reason can be listed.
                Err(e) => match file.as_deref().map(raw_strategies) {
                    Some(Ok(set)) => Ok(set),
                    _ => Err(vec![e.to_string()]),
                },
            },
        }
    }
}

/// The `[[strategies]]` of a TOML file, not validated.
fn raw_strategies(file: &Path) -> Result<Vec<StrategySettings>, String> {
    #[derive(serde::Deserialize)]
    struct Only {
        #[serde(default)]
        strategies: Vec<StrategySettings>,
    }
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| e.to_string())?;
    table.retain(|k, _| k == "strategies");
    toml::Value::Table(table)
        .try_into::<Only>()
        .map(|o| o.strategies)
        .map_err(|e| e.to_string())
}

/// Every reason `candidate` fails the start-up rules, each as `` `key` = value: problem ``:
/// a strategy found at fault is set aside and the rest checked again, so each offending
/// strategy is named; the first problem outside the strategies ends the search.
pub fn reasons(candidate: &Settings) -> Vec<String> {
    let mut working = candidate.clone();
    // The index in `candidate` of each strategy still in `working`.
    let mut index: Vec<usize> = (0..candidate.strategies.len()).collect();
    let mut out = Vec::new();
    while let Err((key, value, problem)) = alpha_panda_config::validate_settings(&working) {
        let value = value.map(|v| format!(" = {v}")).unwrap_or_default();
        match strategy_index(&key).filter(|i| *i < index.len()) {
            Some(i) => {
                let original = index[i];
                let key = key.replacen(
                    &format!("strategies[{i}]"),
                    &format!("strategies[{original}]"),
                    1,
                );
                out.push(format!(
                    "`{key}`{value}: {problem} (strategy {})",
                    candidate.strategies[original].id
                ));
                working.strategies.remove(i);
                index.remove(i);
            }
            None => {
                out.push(format!("`{key}`{value}: {problem}"));
                break;
            }
        }
    }
    out
}

/// `3` of `strategies[3].params.lookback`.
fn strategy_index(key: &str) -> Option<usize> {
    key.strip_prefix("strategies[")?
        .split(']')
        .next()?
        .parse()
        .ok()
}

/// Reads `source`, validates its strategies against `running` and installs them in `live`.
pub fn reload(running: &Settings, source: &Source, live: &Live) -> Result<Applied, Refused> {
    let refuse = |reasons| Refused {
        source: source.describe(),
        reasons,
    };
    let strategies = source.read().map_err(refuse)?;
    let mut candidate = running.clone();
    candidate.strategies = strategies;
    let reasons = reasons(&candidate);
    if !reasons.is_empty() {
        return Err(refuse(reasons));
    }
    let ids = candidate
        .strategies
        .iter()
        .map(|s| s.id.to_string())
        .collect();
    let generation = live.replace(Arc::new(candidate));
    tracing::info!(generation, source = %source.describe(), "strategies reload accepted");
    Ok(Applied {
        generation,
        source: source.describe(),
        strategies: ids,
    })
}

/// [`reload`] as the admin API and SIGHUP call it.
pub fn reloader(running: Arc<Settings>, source: Source, live: Live) -> Reloader {
    Arc::new(move || reload(&running, &source, &live))
}

/// Reloads on every SIGHUP until the task is dropped; each attempt is audited.
pub async fn on_sighup(control: Arc<Control>) -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    while hup.recv().await.is_some() {
        let Some(reloader) = control.reloader() else {
            continue;
        };
        let outcome = match tokio::task::spawn_blocking(move || reloader()).await {
            Ok(Ok(a)) => format!("200 reloaded generation {} from {}", a.generation, a.source),
            Ok(Err(r)) => format!(
                "422 strategies from {} refused; the running set is unchanged; {}",
                r.source,
                r.reasons.join("; ")
            ),
            Err(e) => format!("500 reload did not run: {e}"),
        };
        control.record(AuditEvent::Admin(AdminCall {
            who: "signal".to_owned(),
            from: "local".to_owned(),
            what: "SIGHUP".to_owned(),
            broker: None,
            summary: String::new(),
            outcome,
            at: std::time::SystemTime::now(),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_file(text: &str) -> (PathBuf, Settings) {
        let dir = std::env::temp_dir().join(format!("ap-reload-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let file = dir.join("alpha.toml");
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{e}"));
        (file, Settings::default())
    }

    fn cleanup(file: &Path) {
        if let Some(dir) = file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    const GOOD: &str = "[[strategies]]\nid = \"m\"\nkind = \"momentum\"\ninstruments = [1]\nparams = { lookback = 4 }\n";

    #[test]
    fn every_offending_strategy_is_named_by_its_key() {
        let mut candidate = Settings::default();
        for i in [0, 2] {
            candidate.strategies[i]
                .params
                .insert("lookback".into(), toml::Value::Integer(0));
        }
        let r = reasons(&candidate);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].starts_with("`strategies[0].params"), "{r:?}");
        assert!(r[1].starts_with("`strategies[2].params"), "{r:?}");
        assert!(r[1].contains("strategy rsi_1"), "{r:?}");
    }

    #[test]
    fn a_valid_set_has_no_reason() {
        assert!(reasons(&Settings::default()).is_empty());
    }

    #[test]
    fn a_risk_override_of_a_removed_strategy_is_a_reason() {
        let mut candidate: Settings =
            alpha_panda_config::load::load(None, Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        let paper = alpha_panda_core::BrokerName::paper();
        let mut risk = candidate.risk_for(&paper);
        risk.strategies.insert(
            alpha_panda_core::StrategyId::new("momentum_1").unwrap_or_else(|e| panic!("{e}")),
            Default::default(),
        );
        candidate.risk.insert(paper, risk);
        assert!(reasons(&candidate).is_empty());
        candidate
            .strategies
            .retain(|s| s.id.as_str() != "momentum_1");
        let r = reasons(&candidate);
        assert!(
            r.len() == 1 && r[0].contains("risk.paper.strategies.momentum_1"),
            "{r:?}"
        );
    }

    #[test]
    fn a_good_file_is_installed_as_the_next_generation() {
        let (file, running) = settings_file(GOOD);
        let live = Live::new(Arc::new(running.clone()));
        let source = Source::Settings {
            file: Some(file.clone()),
        };
        let applied = reload(&running, &source, &live);
        cleanup(&file);
        let applied = applied.unwrap_or_else(|r| panic!("{r:?}"));
        assert_eq!(applied.generation, 1);
        assert_eq!(applied.strategies, vec!["m".to_owned()]);
        assert!(live.knows("m") && !live.knows("rsi_1"));
    }

    #[test]
    fn a_file_with_a_bad_parameter_is_refused_naming_the_key_and_the_running_set_stays() {
        let (file, running) = settings_file(&format!(
            "{GOOD}[[strategies]]\nid = \"r\"\nkind = \"rsi\"\ninstruments = [1]\nparams = {{ period = 0 }}\n"
        ));
        let live = Live::new(Arc::new(running.clone()));
        let source = Source::Settings {
            file: Some(file.clone()),
        };
        let refused = reload(&running, &source, &live);
        cleanup(&file);
        let refused = refused
            .err()
            .unwrap_or_else(|| panic!("a bad parameter was accepted"));
        assert_eq!(refused.reasons.len(), 1, "{refused:?}");
        assert!(
            refused.reasons[0].starts_with("`strategies[1].params.period`"),
            "{refused:?}"
        );
        assert_eq!(live.generation(), 0);
        assert!(live.knows("rsi_1"));
    }

    #[test]
    fn a_file_that_is_not_toml_is_refused_with_the_loader_s_words() {
        let (file, running) = settings_file("[[strategies]\n");
        let live = Live::new(Arc::new(running.clone()));
        let refused = reload(
            &running,
            &Source::Settings {
                file: Some(file.clone()),
            },
            &live,
        );
        cleanup(&file);
        let refused = refused.err().unwrap_or_else(|| panic!("accepted"));
        assert!(refused.reasons[0].contains("not valid TOML"), "{refused:?}");
        assert_eq!(live.generation(), 0);
    }
}
