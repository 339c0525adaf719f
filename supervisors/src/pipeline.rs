//! Assembling the trading stages on a transport: shared by the daemon and the backtest.

use std::sync::Arc;
use std::time::Duration;

use alpha_panda_actors::control::Control;
use alpha_panda_actors::delivery::worker::StageFactory;
use alpha_panda_actors::delivery::{DeliveryPolicy, EventProducer, inprocess, kafka};
use alpha_panda_actors::stages::{self, Counters};
use alpha_panda_actors::store::Store;
use alpha_panda_actors::strategy::Builder;
use alpha_panda_actors::zerodha::{ZerodhaTrader, trader_factory};
use alpha_panda_config::{BrokerKind, Settings};
use alpha_panda_topics::{BrokerTopic, TopicName};
use anyhow::Context;

pub enum Transport {
    Kafka(String),
    InProcess(inprocess::InProcessBus),
}

pub enum Member {
    Kafka(kafka::ConsumerHandle),
    InProcess(inprocess::InProcessConsumerHandle),
}

impl Member {
    pub async fn shutdown(self) {
        match self {
            Member::Kafka(h) => h.shutdown().await,
            Member::InProcess(h) => h.shutdown().await,
        }
    }
}

pub struct Assembly {
    pub settings: Arc<Settings>,
    pub transport: Transport,
    pub producer: EventProducer,
    pub store: Store,
    /// Trading states, pauses and supervision of these stages, shared with the HTTP server.
    pub control: Arc<Control>,
    /// Makes strategy instances (tests wrap it to inject faults).
    pub strategies: Builder,
    /// The trader of the active zerodha broker (`crate::kite::trader` makes it).
    pub zerodha: Option<Arc<ZerodhaTrader>>,
}

impl Assembly {
    pub fn new(
        settings: Arc<Settings>,
        transport: Transport,
        producer: EventProducer,
        store: Store,
    ) -> Self {
        let brokers = settings
            .active_brokers
            .iter()
            .map(|b| b.as_str().to_owned())
            .collect();
        Self {
            control: Arc::new(Control::new(store.clone(), brokers)),
            settings,
            transport,
            producer,
            store,
            strategies: alpha_panda_actors::strategy::default_builder(),
            zerodha: None,
        }
    }

    /// Loads the persisted trading states, pauses and disabled strategies.
    pub async fn load_control(&self) -> anyhow::Result<()> {
        self.control
            .refresh(&self.strategy_ids())
            .await
            .context("loading trading states and pauses from the store")
    }

    pub fn strategy_ids(&self) -> Vec<String> {
        self.settings
            .strategies
            .iter()
            .map(|s| s.id.as_str().to_owned())
            .collect()
    }

    fn policy(&self, namespace: &str, stage: &str) -> DeliveryPolicy {
        let group = self.group(namespace, stage);
        let mut p = DeliveryPolicy::new(group, stage, namespace);
        p.control = self.control.clone();
        // Strategies, risk and the paper trader rebuild their state from their input when
        // they take a partition; the portfolio and the zerodha trader reload theirs from the
        // store instead.
        let zerodha = self
            .settings
            .active_brokers
            .iter()
            .any(|b| b.as_str() == namespace && self.kind(b) == Some(BrokerKind::Zerodha));
        p.warm_up = matches!(stage, "strategy" | "risk" | "trader") && !zerodha;
        p.dedup_ttl = Duration::from_secs(self.settings.redis.dedup_ttl_secs);
        p.session_timeout = Duration::from_millis(self.settings.kafka.session_timeout_ms.into());
        p.instance_id = self.settings.kafka.instance_id.clone();
        p
    }

    fn consume(
        &self,
        topics: Vec<TopicName>,
        namespace: &str,
        stage: &str,
        factory: StageFactory,
    ) -> anyhow::Result<Member> {
        let policy = self.policy(namespace, stage);
        alpha_panda_actors::metrics::metrics().register_stage(
            stage,
            namespace,
            &topics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        );
        let arbiter = actix_rt::Arbiter::current();
        Ok(match &self.transport {
            Transport::Kafka(servers) => Member::Kafka(
                kafka::start(kafka::ConsumerSpec {
                    servers: servers.clone(),
                    client_id: self.settings.kafka.client_id.clone(),
                    topics: topics.clone(),
                    policy,
                    producer: self.producer.clone(),
                    store: self.store.clone(),
                    factory,
                    arbiter,
                })
                .with_context(|| format!("starting the {stage} consumer"))?,
            ),
            Transport::InProcess(bus) => {
                Member::InProcess(inprocess::start(inprocess::InProcessConsumerSpec {
                    bus: bus.clone(),
                    topics: topics.clone(),
                    policy,
                    producer: self.producer.clone(),
                    store: self.store.clone(),
                    factory,
                    arbiter,
                }))
            }
        })
    }

    fn kind(&self, broker: &alpha_panda_core::BrokerName) -> Option<BrokerKind> {
        self.settings.brokers.get(broker).map(|d| d.kind)
    }

    /// Whether the broker runs a trader: paper always, zerodha when its trader is built.
    fn has_trader(&self, broker: &alpha_panda_core::BrokerName) -> bool {
        match self.kind(broker) {
            Some(BrokerKind::Paper) => true,
            Some(BrokerKind::Zerodha) => self.zerodha.is_some(),
            None => false,
        }
    }

    /// Consumer group of a stage: `{group_prefix}.{namespace}.{stage}`.
    pub fn group(&self, namespace: &str, stage: &str) -> String {
        format!("{}.{namespace}.{stage}", self.settings.kafka.group_prefix)
    }

    /// The stages this assembly runs, as (namespace, stage).
    pub fn stages(&self) -> Vec<(String, String)> {
        let mut v = vec![("market".to_owned(), "strategy".to_owned())];
        for b in &self.settings.active_brokers {
            let ns = b.as_str().to_owned();
            v.push((ns.clone(), "risk".to_owned()));
            if self.has_trader(b) {
                v.push((ns.clone(), "trader".to_owned()));
            }
            v.push((ns, "portfolio".to_owned()));
        }
        v
    }

    /// What each stage consumes: (group, topic), in pipeline order.
    pub fn consumed(&self) -> Vec<(String, TopicName)> {
        let mut v = vec![(self.group("market", "strategy"), TopicName::market_ticks())];
        for b in &self.settings.active_brokers {
            let risk = self.group(b.as_str(), "risk");
            for t in [
                BrokerTopic::SignalsRaw,
                BrokerTopic::OrdersFilled,
                BrokerTopic::OrdersFailed,
            ] {
                v.push((risk.clone(), TopicName::broker(b, t)));
            }
            if self.has_trader(b) {
                let trader = self.group(b.as_str(), "trader");
                v.push((
                    trader.clone(),
                    TopicName::broker(b, BrokerTopic::SignalsValidated),
                ));
                if self.kind(b) == Some(BrokerKind::Paper) {
                    v.push((trader, TopicName::market_ticks()));
                }
            }
            let portfolio = self.group(b.as_str(), "portfolio");
            v.push((
                portfolio.clone(),
                TopicName::broker(b, BrokerTopic::OrdersFilled),
            ));
            v.push((portfolio, TopicName::market_ticks()));
        }
        v
    }

    /// Starts every stage: the strategies, then per active broker risk, trader (paper, or
    /// zerodha when `zerodha` is set) and portfolio.
    pub fn start_stages(&self, counters: &Arc<Counters>) -> anyhow::Result<Vec<Member>> {
        self.start_stages_with(counters, &|_, _| None)
    }

    /// As `start_stages`, with `replace(broker, stage)` supplying a different actor for a
    /// broker's stage (fault-injection tests).
    pub fn start_stages_with(
        &self,
        counters: &Arc<Counters>,
        replace: &dyn Fn(&alpha_panda_core::BrokerName, &str) -> Option<StageFactory>,
    ) -> anyhow::Result<Vec<Member>> {
        let mut members = vec![
            self.consume(
                vec![TopicName::market_ticks()],
                "market",
                "strategy",
                stages::strategy_factory(
                    &self.settings,
                    counters.clone(),
                    self.control.clone(),
                    self.strategies.clone(),
                )
                .map_err(anyhow::Error::msg)?,
            )?,
        ];
        for broker in &self.settings.active_brokers {
            let b = broker.as_str();
            members.push(self.consume(
                vec![
                    TopicName::broker(broker, BrokerTopic::SignalsRaw),
                    TopicName::broker(broker, BrokerTopic::OrdersFilled),
                    TopicName::broker(broker, BrokerTopic::OrdersFailed),
                ],
                b,
                "risk",
                replace(broker, "risk").unwrap_or_else(|| {
                    stages::risk_factory(
                        self.settings.clone(),
                        counters.clone(),
                        self.control.clone(),
                    )
                }),
            )?);
            match self.settings.brokers.get(broker).map(|d| d.kind) {
                Some(BrokerKind::Paper) => members.push(
                    self.consume(
                        vec![
                            TopicName::broker(broker, BrokerTopic::SignalsValidated),
                            TopicName::market_ticks(),
                        ],
                        b,
                        "trader",
                        match replace(broker, "trader") {
                            Some(f) => f,
                            None => stages::paper_trader_factory(
                                self.settings.clone(),
                                broker.clone(),
                                counters.clone(),
                                self.control.clone(),
                            )
                            .map_err(anyhow::Error::msg)?,
                        },
                    )?,
                ),
                Some(BrokerKind::Zerodha) => match &self.zerodha {
                    Some(trader) => members.push(self.consume(
                        vec![TopicName::broker(broker, BrokerTopic::SignalsValidated)],
                        b,
                        "trader",
                        replace(broker, "trader").unwrap_or_else(|| trader_factory(trader.clone())),
                    )?),
                    None => tracing::warn!(
                        broker = b,
                        "no zerodha trader: validated signals wait in {b}.signals.validated"
                    ),
                },
                None => {}
            }
            members.push(self.consume(
                vec![
                    TopicName::broker(broker, BrokerTopic::OrdersFilled),
                    TopicName::market_ticks(),
                ],
                b,
                "portfolio",
                stages::portfolio_factory(
                    self.settings.clone(),
                    self.store.clone(),
                    broker.clone(),
                ),
            )?);
        }
        Ok(members)
    }
}
