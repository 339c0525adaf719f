//! Loading settings from defaults, files and the environment, and the errors a person sees.

use std::io::Write;
use std::path::PathBuf;

use alpha_panda_config::{ConfigError, Feed, Origin, Settings, load, mask};
use alpha_panda_core::BrokerName;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(contents: &str) -> tempfile_lite::TempFile {
    tempfile_lite::TempFile::new(contents)
}

/// A file in the target dir's temp area, removed on drop (no extra dependency needed).
mod tempfile_lite {
    use super::*;
    pub struct TempFile(pub PathBuf);
    impl TempFile {
        pub fn new(contents: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "alpha-panda-config-{}-{}.toml",
                std::process::id(),
                uuid_like()
            ));
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(contents.as_bytes()).unwrap();
            Self(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    fn uuid_like() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }
}

fn invalid(err: ConfigError) -> (String, Option<String>, String, Origin) {
    match err {
        ConfigError::Invalid {
            key,
            value,
            problem,
            origin,
        } => (key, value, problem, origin),
        other => panic!("expected an Invalid error, got {other}"),
    }
}

#[test]
fn no_file_and_no_environment_is_the_embedded_default() {
    let s = load(None, env(&[])).unwrap();
    assert_eq!(s, Settings::default());
    assert_eq!(s.active_brokers, vec![BrokerName::paper()]);
    assert_eq!(s.kafka.bootstrap_servers, None);
    assert_eq!(s.feed, Feed::Synthetic);
    assert_eq!(s.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(s.strategies.len(), 3);
}

#[test]
fn a_typo_in_an_environment_variable_names_the_key_and_the_variable() {
    let err = load(None, env(&[("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVRS", "x")])).unwrap_err();
    let text = err.to_string();
    let (key, _, problem, origin) = invalid(err);
    assert_eq!(key, "kafka.bootstrap_servrs");
    assert!(problem.contains("unknown field"), "{problem}");
    assert!(
        problem.contains("bootstrap_servers"),
        "lists what is expected: {problem}"
    );
    assert_eq!(
        origin,
        Origin::Env("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVRS".into())
    );
    assert!(
        text.contains("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVRS"),
        "{text}"
    );
}

#[test]
fn an_unknown_key_in_the_file_names_the_key_and_the_file() {
    let f = file("[http]\nlisten = \"127.0.0.1:9000\"\nlistn = 1\n");
    let (key, _, _, origin) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "http.listn");
    assert_eq!(origin, Origin::File(f.0.clone()));
    let f = file("[kafkaa]\nbootstrap_servers = \"x:1\"\n");
    let (key, _, _, _) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "kafkaa");
}

#[test]
fn a_bad_broker_name_is_refused_with_the_reason() {
    let err = load(None, env(&[("ACTIVE_BROKERS", "paper,Paper!")])).unwrap_err();
    let text = err.to_string();
    let (key, _, problem, origin) = invalid(err);
    assert_eq!(key, "active_brokers");
    assert!(problem.contains("Paper!"), "{problem}");
    assert!(problem.contains("lowercase"), "{problem}");
    assert_eq!(origin, Origin::Env("ACTIVE_BROKERS".into()));
    assert!(text.contains("ACTIVE_BROKERS"), "{text}");
}

#[test]
fn active_brokers_come_from_the_environment_and_zerodha_needs_its_api_key_to_trade() {
    // Administration (topics, DLQ, config check) needs no Kite credentials; trading does.
    let admin_only = load(None, env(&[("ACTIVE_BROKERS", "paper,zerodha")])).unwrap();
    let (key, _, problem, _) = invalid(alpha_panda_config::check_trading(&admin_only).unwrap_err());
    assert_eq!(key, "brokers.zerodha.kite.api_key");
    assert!(
        problem.contains("ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_KEY"),
        "{problem}"
    );
    let s = load(
        None,
        env(&[
            ("ACTIVE_BROKERS", "paper,zerodha"),
            ("ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_KEY", "kitekey"),
        ]),
    )
    .unwrap();
    alpha_panda_config::check_trading(&s).unwrap();
    assert_eq!(
        s.active_brokers,
        vec![BrokerName::paper(), BrokerName::zerodha()]
    );
}

#[test]
fn slippage_is_bounded_so_a_sell_can_never_be_priced_at_zero() {
    let (key, value, problem, _) = invalid(
        load(
            None,
            env(&[(
                "ALPHA_PANDA__BROKERS__PAPER__FILL_MODEL__SLIPPAGE_BPS",
                "\"20000\"",
            )]),
        )
        .unwrap_err(),
    );
    assert_eq!(key, "brokers.paper.fill_model.slippage_bps");
    assert_eq!(value.as_deref(), Some("20000"));
    assert!(problem.contains("0 to 1000"), "{problem}");
}

#[test]
fn a_checkpointed_batch_holds_1_to_10000_records() {
    for bad in ["0", "10001"] {
        let (key, value, problem, _) = invalid(
            load(
                None,
                env(&[("ALPHA_PANDA__DELIVERY__BATCH_MAX_RECORDS", bad)]),
            )
            .unwrap_err(),
        );
        assert_eq!(key, "delivery.batch_max_records");
        assert_eq!(value.as_deref(), Some(bad));
        assert!(problem.contains("1 to 10000"), "{problem}");
    }
    let s = load(
        None,
        env(&[("ALPHA_PANDA__DELIVERY__BATCH_MAX_RECORDS", "64")]),
    )
    .unwrap();
    assert_eq!(s.delivery.batch_max_records, 64);
}

#[test]
fn a_checkpointed_batch_waits_0_to_1000_ms() {
    assert_eq!(load(None, env(&[])).unwrap().delivery.batch_max_ms, 0);
    let (key, value, problem, _) = invalid(
        load(
            None,
            env(&[("ALPHA_PANDA__DELIVERY__BATCH_MAX_MS", "1001")]),
        )
        .unwrap_err(),
    );
    assert_eq!(key, "delivery.batch_max_ms");
    assert_eq!(value.as_deref(), Some("1001"));
    assert!(problem.contains("0 to 1000"), "{problem}");
    let s = load(None, env(&[("ALPHA_PANDA__DELIVERY__BATCH_MAX_MS", "5")])).unwrap();
    assert_eq!(s.delivery.batch_max_ms, 5);
}

#[test]
fn delivery_threads_default_to_the_cores_and_hold_1_to_256() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(load(None, env(&[])).unwrap().delivery.threads, cores);
    for bad in ["0", "257"] {
        let (key, value, problem, _) =
            invalid(load(None, env(&[("ALPHA_PANDA__DELIVERY__THREADS", bad)])).unwrap_err());
        assert_eq!(key, "delivery.threads");
        assert_eq!(value.as_deref(), Some(bad));
        assert!(problem.contains("1 to 256"), "{problem}");
    }
    let s = load(None, env(&[("ALPHA_PANDA__DELIVERY__THREADS", "3")])).unwrap();
    assert_eq!(s.delivery.threads, 3);
}

#[test]
fn the_environment_overrides_the_file_which_overrides_the_defaults() {
    let f = file(
        r#"
active_brokers = ["paper", "paper2"]
[kafka]
bootstrap_servers = "127.0.0.1:9092"
linger_ms = 20
[brokers.paper2]
kind = "paper"
account = "second"
[brokers.paper.fill_model]
slippage_bps = 2.5
"#,
    );
    let s = load(
        Some(&f.0),
        env(&[
            ("ALPHA_PANDA__KAFKA__LINGER_MS", "1"),
            ("ALPHA_PANDA__FEED__REPLAY", f.0.to_str().unwrap()),
            ("ALPHA_PANDA__STRATEGIES__0__ENABLED", "false"),
            ("ALPHA_PANDA__ADMIN__TOKEN", "123456789012345678901234"),
            ("UNRELATED", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(s.kafka.bootstrap_servers.as_deref(), Some("127.0.0.1:9092"));
    assert_eq!(s.kafka.linger_ms, 1);
    assert_eq!(s.active_brokers.len(), 2);
    // The file's [brokers.paper.fill_model] merges into the default paper broker.
    assert_eq!(
        s.brokers[&BrokerName::paper()].account.as_str(),
        "paper_main"
    );
    assert_eq!(
        s.brokers[&BrokerName::paper()]
            .fill_model
            .slippage_bps
            .to_string(),
        "2.5"
    );
    assert!(s.brokers.contains_key(&BrokerName::zerodha()));
    assert_eq!(
        s.feed,
        Feed::Replay {
            file: f.0.clone(),
            speed: None
        }
    );
    assert!(!s.strategies[0].enabled);
    assert!(s.strategies[1].enabled);
    assert_eq!(s.admin.token.as_deref(), Some("123456789012345678901234"));
}

#[test]
fn ill_typed_values_name_key_value_and_expectation() {
    let (key, value, problem, _) =
        invalid(load(None, env(&[("ALPHA_PANDA__KAFKA__LINGER_MS", "soon")])).unwrap_err());
    assert_eq!(key, "kafka.linger_ms");
    assert_eq!(value.as_deref(), Some("\"soon\""));
    assert!(
        problem.contains("u32") || problem.contains("integer"),
        "{problem}"
    );

    let (key, value, problem, _) = invalid(
        load(
            None,
            env(&[("ALPHA_PANDA__KAFKA__BOOTSTRAP_SERVERS", "localhost")]),
        )
        .unwrap_err(),
    );
    assert_eq!(key, "kafka.bootstrap_servers");
    assert_eq!(value.as_deref(), Some("localhost"));
    assert!(problem.contains("host:port"), "{problem}");

    let f = file(
        "[[strategies]]\nid = \"a\"\nkind = \"momentum\"\ninstruments = [1]\n[[strategies]]\nid = \"b\"\nkind = \"magic\"\ninstruments = [1]\n",
    );
    let (key, _, problem, origin) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "strategies[1].kind");
    assert!(
        problem.contains("magic") && problem.contains("momentum"),
        "{problem}"
    );
    assert_eq!(origin, Origin::File(f.0.clone()));

    let (key, _, problem, _) =
        invalid(load(None, env(&[("ALPHA_PANDA__FEED", "carrier_pigeon")])).unwrap_err());
    assert_eq!(key, "feed");
    assert!(problem.contains("synthetic"), "{problem}");

    let (key, _, problem, _) = invalid(
        load(
            None,
            env(&[("ALPHA_PANDA__FEED__REPLAY", "/no/such/ticks.csv")]),
        )
        .unwrap_err(),
    );
    assert_eq!(key, "feed.replay");
    assert!(problem.contains("no such file"), "{problem}");
}

#[test]
fn semantic_errors_point_at_the_offending_key() {
    let f = file("[risk.paper]\nprice_band_pct = 0\n");
    let (key, ..) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "risk.paper.price_band_pct");
    let f = file("[risk.nobody]\nkill_switch = true\n");
    let (key, ..) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "risk.nobody");
    let f = file("[risk.paper]\nholidays = [\"26-01-2026\"]\n");
    let (key, ..) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "risk.paper.holidays[0]");
    let f = file(
        "[[strategies]]\nid = \"a\"\nkind = \"rsi\"\ninstruments = [1]\nbrokers = [\"ghost\"]\n",
    );
    let (key, ..) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "strategies[0].brokers");
    let f = file(
        "[[strategies]]\nid = \"a\"\nkind = \"rsi\"\ninstruments = [1]\norder_type = \"SL-M\"\n",
    );
    let (key, value, problem, _) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "strategies[0].order_type");
    assert_eq!(value.as_deref(), Some("SL-M"));
    assert!(problem.contains("MARKET or LIMIT"), "{problem}");
    let f = file(
        "[[strategies]]\nid = \"a\"\nkind = \"rsi\"\ninstruments = [1]\norder_type = \"LIMIT\"\nlimit_offset_bps = \"-1\"\n",
    );
    let (key, ..) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "strategies[0].limit_offset_bps");
}

#[test]
fn syntax_errors_name_the_file() {
    let f = file("[kafka\n");
    match load(Some(&f.0), env(&[])).unwrap_err() {
        ConfigError::Syntax { path, .. } => assert_eq!(path, f.0),
        other => panic!("{other}"),
    }
    assert!(matches!(
        load(Some(std::path::Path::new("/no/such.toml")), env(&[])),
        Err(ConfigError::Unreadable { .. })
    ));
}

#[test]
fn an_admin_token_shorter_than_24_characters_is_refused_naming_the_key_but_not_the_token() {
    let err = load(
        None,
        env(&[("ALPHA_PANDA__ADMIN__TOKEN", "twenty-three-characters")]),
    )
    .unwrap_err();
    let shown = err.to_string();
    let (key, value, problem, origin) = invalid(err);
    assert_eq!(key, "admin.token");
    assert_eq!(value, None, "the token itself is never shown");
    assert!(problem.contains("23 characters"), "{problem}");
    assert!(problem.contains("at least 24"), "{problem}");
    assert_eq!(origin, Origin::Env("ALPHA_PANDA__ADMIN__TOKEN".to_owned()));
    assert!(!shown.contains("twenty-three-characters"), "{shown}");
    let ok = load(
        None,
        env(&[("ALPHA_PANDA__ADMIN__TOKEN", "twenty-four-characters!!")]),
    )
    .unwrap();
    assert_eq!(ok.admin.token.as_deref(), Some("twenty-four-characters!!"));
}

#[test]
fn the_effective_configuration_masks_secrets_and_reloads_to_the_same_settings() {
    let s = load(
        None,
        env(&[
            ("ALPHA_PANDA__ADMIN__TOKEN", "s3cret-token-of-24-chars!"),
            (
                "ALPHA_PANDA__REDIS__URL",
                "redis://:hunter2@127.0.0.1:6379/0",
            ),
            (
                "ALPHA_PANDA__DATABASE__URL",
                "postgres://ap:pgpass@127.0.0.1/ap",
            ),
            (
                "ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_SECRET",
                "kitesecret",
            ),
            (
                "ALPHA_PANDA__BROKERS__ZERODHA__KITE__ACCESS_TOKEN",
                "kiteaccesstoken",
            ),
        ]),
    )
    .unwrap();
    let shown = mask::effective_toml(&s);
    for secret in [
        "s3cret-token-of-24-chars!",
        "hunter2",
        "pgpass",
        "kitesecret",
        "kiteaccesstoken",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    assert!(
        shown.contains("redis://:********@127.0.0.1:6379/0"),
        "{shown}"
    );
    assert!(
        shown.contains("postgres://ap:********@127.0.0.1/ap"),
        "{shown}"
    );

    // Unmasked, the same text loads back to the same settings: printing is lossless.
    let plain = toml::to_string(&toml::Value::try_from(&s).unwrap()).unwrap();
    let f = file(&plain);
    assert_eq!(load(Some(&f.0), env(&[])).unwrap(), s);
}

/// Each way a secret can reach an error message, from each layer: the message names the key
/// and never the value.
#[test]
fn errors_never_show_the_value_of_a_secret_or_misspelt_key() {
    let cases: Vec<(ConfigError, &str)> = vec![
        // A misspelt secret key in the environment: unknown, so possibly secret.
        (
            load(None, env(&[("ALPHA_PANDA__ADMIN__TOKN", "tok-3f9a77c1d2")])).unwrap_err(),
            "tok-3f9a77c1d2",
        ),
        // The same in a file.
        (
            load(
                Some(&file("[admin]\ntokn = \"tok-3f9a77c1d2\"\n").0),
                env(&[]),
            )
            .unwrap_err(),
            "tok-3f9a77c1d2",
        ),
        // A secret of the wrong type: serde's own words would quote it.
        (
            load(
                Some(&file("[brokers.zerodha.kite]\napi_secret = [\"s3cr3tval2\"]\n").0),
                env(&[]),
            )
            .unwrap_err(),
            "s3cr3tval2",
        ),
        (
            load(
                None,
                env(&[(
                    "ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_SECRET",
                    "[\"s3cr3tval\"]",
                )]),
            )
            .unwrap_err(),
            "s3cr3tval",
        ),
        // A URL whose password holds a `/`, refused for its scheme.
        (
            load(
                None,
                env(&[("ALPHA_PANDA__REDIS__URL", "http://u:pa/ss@h:1/0")]),
            )
            .unwrap_err(),
            "pa/ss",
        ),
    ];
    for (err, secret) in cases {
        let shown = err.to_string();
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        assert!(shown.contains("invalid configuration `"), "{shown}");
    }
    let (key, value, _, _) =
        invalid(load(None, env(&[("ALPHA_PANDA__ADMIN__TOKN", "tok-3f9a77c1d2")])).unwrap_err());
    assert_eq!(
        (key.as_str(), value.as_deref()),
        ("admin.tokn", Some(mask::MASK))
    );
}

#[test]
fn a_url_password_with_a_slash_is_masked_whole() {
    assert_eq!(
        mask::url("redis://u:pa/ss@h:6379/0"),
        "redis://u:********@h:6379/0"
    );
    assert_eq!(
        mask::url("postgres://ap:p@ss/w:rd@db.local/ap"),
        "postgres://ap:********@db.local/ap"
    );
}

#[test]
fn url_masking_leaves_urls_without_passwords_alone() {
    assert_eq!(
        mask::url("redis://127.0.0.1:6379"),
        "redis://127.0.0.1:6379"
    );
    assert_eq!(mask::url("postgres://ap@h/db"), "postgres://ap@h/db");
    assert_eq!(mask::url("not a url"), "not a url");
}

#[test]
fn strategy_params_are_checked_against_their_kind() {
    let f = file(
        "[[strategies]]\nid = \"m\"\nkind = \"momentum\"\ninstruments = [1]\nparams = { lookbak = 5 }\n",
    );
    let (key, _, problem, _) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "strategies[0].params.lookbak");
    assert!(
        problem.contains("lookback"),
        "lists the known parameters: {problem}"
    );
    let f = file(
        "[[strategies]]\nid = \"s\"\nkind = \"sma_crossover\"\ninstruments = [1]\nparams = { fast = 30, slow = 10 }\n",
    );
    let (key, _, problem, _) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "strategies[0].params.fast");
    assert!(problem.contains("fast < slow"), "{problem}");
    let f = file(
        "[[strategies]]\nid = \"r\"\nkind = \"rsi\"\ninstruments = [1]\nparams = { period = \"x\" }\n",
    );
    let (key, ..) = invalid(load(Some(&f.0), env(&[])).unwrap_err());
    assert_eq!(key, "strategies[0].params.period");
    let f = file(
        "[[strategies]]\nid = \"r\"\nkind = \"mean_reversion\"\ninstruments = [1]\nparams = { bollinger_k = \"1.5\", oversold = 25 }\n",
    );
    let s = load(Some(&f.0), env(&[])).unwrap();
    match s.strategies[0].typed_params().unwrap() {
        alpha_panda_config::StrategyParams::MeanReversion(p) => {
            assert_eq!(p.bollinger_k.to_string(), "1.5");
            assert_eq!(p.oversold.to_string(), "25");
            assert_eq!(p.rsi_period, 14, "unset parameters keep their defaults");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_kite_feed_needs_ticker_instruments_and_kite_limits_must_be_positive() {
    let zerodha = [
        ("ACTIVE_BROKERS", "paper,zerodha"),
        ("ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_KEY", "kitekey"),
    ];
    let f = file("feed = \"kite\"\n");
    let (key, _, problem, _) = invalid(load(Some(&f.0), env(&zerodha)).unwrap_err());
    assert_eq!(key, "feed");
    assert!(problem.contains("ticker_instruments"), "{problem}");

    let f = file(
        "feed = \"kite\"\n[brokers.zerodha]\nkind = \"zerodha\"\naccount = \"zerodha_main\"\n\
         [brokers.zerodha.kite]\nticker_instruments = [408065]\nticker_mode = \"ltp\"\n",
    );
    let s = load(Some(&f.0), env(&zerodha)).unwrap();
    let k = &s.brokers[&BrokerName::zerodha()].kite;
    assert_eq!(k.ticker_instruments, vec![408065]);
    assert_eq!(k.ticker_mode, alpha_panda_config::TickerMode::Ltp);
    assert_eq!((k.orders_per_minute, k.orders_per_day), (200, 3000));

    let mut vars = zerodha.to_vec();
    vars.push((
        "ALPHA_PANDA__BROKERS__ZERODHA__KITE__ORDERS_PER_MINUTE",
        "0",
    ));
    let (key, _, problem, _) = invalid(load(None, env(&vars)).unwrap_err());
    assert_eq!(key, "brokers.zerodha.kite.orders_per_minute");
    assert!(problem.contains("above 0"), "{problem}");
}

#[test]
fn the_square_off_time_defaults_to_15_20_ist_and_must_be_hh_mm() {
    let zerodha = [
        ("ACTIVE_BROKERS", "paper,zerodha"),
        ("ALPHA_PANDA__BROKERS__ZERODHA__KITE__API_KEY", "kitekey"),
    ];
    let s = load(None, env(&zerodha)).unwrap();
    let k = &s.brokers[&BrokerName::zerodha()].kite;
    assert_eq!(k.square_off_time(), Some((15, 20)));
    assert_eq!(k.order_poll_ms, 1000);
    for bad in ["25:00", "3:20pm", "15-20", "15:2"] {
        let mut vars = zerodha.to_vec();
        vars.push(("ALPHA_PANDA__BROKERS__ZERODHA__KITE__SQUARE_OFF_AT", bad));
        let (key, value, problem, _) = invalid(load(None, env(&vars)).unwrap_err());
        assert_eq!(key, "brokers.zerodha.kite.square_off_at", "{bad}");
        assert!(value.is_some_and(|v| v.contains(bad)), "{bad}");
        assert!(problem.contains("HH:MM"), "{problem}");
    }
}

#[test]
fn a_schema_prefix_that_is_not_a_lowercase_identifier_is_refused_with_the_key() {
    for bad in ["Paper", "1x_", "a-b", "x; DROP"] {
        let err = load(None, env(&[("ALPHA_PANDA__DATABASE__SCHEMA_PREFIX", bad)])).unwrap_err();
        let (key, _, problem, _) = invalid(err);
        assert_eq!(key, "database.schema_prefix", "{bad}");
        assert!(problem.contains("lowercase letters"), "{problem}");
    }
    let ok = load(
        None,
        env(&[("ALPHA_PANDA__DATABASE__SCHEMA_PREFIX", "t1_")]),
    )
    .unwrap();
    assert_eq!(ok.database.schema_prefix, "t1_");
}

#[test]
fn a_database_url_may_be_postgres_or_a_sqlite_directory_and_nothing_else() {
    let s = load(
        None,
        env(&[("ALPHA_PANDA__DATABASE__URL", "sqlite:///var/lib/ap")]),
    )
    .unwrap();
    assert_eq!(s.database.url.as_deref(), Some("sqlite:///var/lib/ap"));
    let (key, _, problem, _) =
        invalid(load(None, env(&[("ALPHA_PANDA__DATABASE__URL", "mysql://h/db")])).unwrap_err());
    assert_eq!(key, "database.url");
    assert!(problem.contains("sqlite://DIRECTORY"), "{problem}");
}
