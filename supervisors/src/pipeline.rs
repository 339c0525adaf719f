//! Assembling the trading stages on a transport: shared by the daemon and the backtest.

use std::sync::Arc;
use std::time::Duration;

use alpha_panda_actors::control::Control;
use alpha_panda_actors::delivery::threads::Arbiters;
use alpha_panda_actors::delivery::unit::{self, CheckpointedFactory};
use alpha_panda_actors::delivery::worker::StageFactory;
use alpha_panda_actors::delivery::{
    Checkpointed, DeliveryPolicy, EventProducer, inprocess, kafka, lease,
};
use alpha_panda_actors::stages::{self, Counters};
use alpha_panda_actors::store::Store;
use alpha_panda_actors::strategy::{Builder, Live};
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
    /// A broker stage over Kafka: active on one daemon at a time (see `delivery::lease`).
    Leased(lease::LeasedStage),
    InProcess(inprocess::InProcessConsumerHandle),
}

impl Member {
    pub async fn shutdown(self) {
        match self {
            Member::Kafka(h) => h.shutdown().await,
            Member::Leased(h) => h.shutdown().await,
            Member::InProcess(h) => h.shutdown().await,
        }
    }
}

/// How a broker stage is made.
enum BrokerStage {
    /// A per-record actor (delivery v1) made afresh each time the stage becomes active.
    PerRecord(Arc<dyn Fn() -> StageFactory + Send + Sync>),
    /// A checkpointed whole-stage unit (delivery v2).
    Checkpointed(CheckpointedFactory),
}

/// The delivery policy of a stage of this configuration.
fn policy(
    settings: &Settings,
    control: &Arc<Control>,
    namespace: &str,
    stage: &str,
) -> DeliveryPolicy {
    let group = format!("{}.{namespace}.{stage}", settings.kafka.group_prefix);
    let mut p = DeliveryPolicy::new(group, stage, namespace);
    p.control = control.clone();
    p.dedup_ttl = Duration::from_secs(settings.redis.dedup_ttl_secs);
    p.session_timeout = Duration::from_millis(settings.kafka.session_timeout_ms.into());
    p.instance_id = settings.kafka.instance_id.clone();
    p.batch_max_records = settings.delivery.batch_max_records;
    p.batch_max_wait = Duration::from_millis(settings.delivery.batch_max_ms);
    // A fill can reach the portfolio twice with two origins (a trader taking over reads its
    // two topics in another interleaving): it is deduplicated by its event id as well.
    if stage == "portfolio"
        && let Ok(broker) = alpha_panda_core::BrokerName::new(namespace)
    {
        p.marked_topics = vec![TopicName::broker(&broker, BrokerTopic::OrdersFilled)];
    }
    p
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
    /// The running strategy definitions; a reload replaces them (`strategy::Live`).
    pub live: Live,
    /// The trader of the active zerodha broker (`crate::kite::trader` makes it).
    pub zerodha: Option<Arc<ZerodhaTrader>>,
    /// Where the Kafka transport's partition workers run: the calling arbiter unless the
    /// daemon gives its worker threads (`delivery.threads`).
    pub workers: Arbiters,
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
            live: Live::new(settings.clone()),
            settings,
            transport,
            producer,
            store,
            strategies: alpha_panda_actors::strategy::default_builder(),
            zerodha: None,
            workers: Arbiters::current(),
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
        policy(&self.settings, &self.control, namespace, stage)
    }

    /// Starts a broker stage (risk, trader, portfolio): over Kafka under a lease, so it is
    /// active on one daemon at a time, with a fresh state (`make`) each time it becomes
    /// active here; in process, directly.
    fn consume_broker_stage(
        &self,
        topics: Vec<TopicName>,
        namespace: &str,
        stage: &str,
        kind: BrokerStage,
    ) -> anyhow::Result<Member> {
        let make: Arc<dyn Fn() -> StageFactory + Send + Sync> = match &kind {
            BrokerStage::PerRecord(make) => make.clone(),
            BrokerStage::Checkpointed(_) => Arc::new(unit::no_per_record_stage),
        };
        let checkpointed = match kind {
            BrokerStage::Checkpointed(factory) => Some(Checkpointed {
                factory,
                whole_stage: true,
            }),
            BrokerStage::PerRecord(_) => None,
        };
        let Transport::Kafka(servers) = &self.transport else {
            let mut policy = self.policy(namespace, stage);
            policy.checkpointed = checkpointed;
            return self.consume_with(topics, policy, make());
        };
        alpha_panda_actors::metrics::metrics().register_stage(
            stage,
            namespace,
            &topics.iter().map(ToString::to_string).collect::<Vec<_>>(),
        );
        let (settings, control, producer, store) = (
            self.settings.clone(),
            self.control.clone(),
            self.producer.clone(),
            self.store.clone(),
        );
        let (servers, namespace, stage_name) =
            (servers.clone(), namespace.to_owned(), stage.to_owned());
        let workers = self.workers.clone();
        let spec = move || kafka::ConsumerSpec {
            servers: servers.clone(),
            client_id: settings.kafka.client_id.clone(),
            topics: topics.clone(),
            policy: DeliveryPolicy {
                checkpointed: checkpointed.clone(),
                ..policy(&settings, &control, &namespace, &stage_name)
            },
            producer: producer.clone(),
            store: store.clone(),
            factory: make(),
            arbiters: workers.clone(),
        };
        Ok(Member::Leased(lease::run(Arc::new(spec)).with_context(
            || format!("starting the lease of the {stage} stage"),
        )?))
    }

    fn consume_with(
        &self,
        topics: Vec<TopicName>,
        policy: DeliveryPolicy,
        factory: StageFactory,
    ) -> anyhow::Result<Member> {
        let (stage, namespace) = (policy.stage.clone(), policy.namespace.clone());
        let stage = stage.as_str();
        alpha_panda_actors::metrics::metrics().register_stage(
            stage,
            &namespace,
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
                    arbiters: self.workers.clone(),
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
        let mut strategy = self.policy("market", "strategy");
        strategy.checkpointed = Some(Checkpointed {
            factory: stages::strategy_units(
                &self.settings,
                counters.clone(),
                self.control.clone(),
                self.strategies.clone(),
                self.live.clone(),
            )
            .map_err(anyhow::Error::msg)?,
            whole_stage: false,
        });
        let mut members = vec![self.consume_with(
            vec![TopicName::market_ticks()],
            strategy,
            unit::no_per_record_stage(),
        )?];
        for broker in &self.settings.active_brokers {
            let b = broker.as_str();
            let risk = match replace(broker, "risk") {
                Some(f) => BrokerStage::PerRecord(Arc::new(move || f.clone())),
                None => BrokerStage::Checkpointed(stages::risk_units(
                    self.settings.clone(),
                    broker.clone(),
                    counters.clone(),
                    self.control.clone(),
                )),
            };
            members.push(self.consume_broker_stage(
                vec![
                    TopicName::broker(broker, BrokerTopic::SignalsRaw),
                    TopicName::broker(broker, BrokerTopic::OrdersFilled),
                    TopicName::broker(broker, BrokerTopic::OrdersFailed),
                ],
                b,
                "risk",
                risk,
            )?);
            match self.settings.brokers.get(broker).map(|d| d.kind) {
                Some(BrokerKind::Paper) => {
                    let trader = match replace(broker, "trader") {
                        Some(f) => BrokerStage::PerRecord(Arc::new(move || f.clone())),
                        None => BrokerStage::Checkpointed(
                            stages::paper_trader_units(
                                self.settings.clone(),
                                broker.clone(),
                                counters.clone(),
                                self.control.clone(),
                            )
                            .map_err(anyhow::Error::msg)?,
                        ),
                    };
                    members.push(self.consume_broker_stage(
                        vec![
                            TopicName::broker(broker, BrokerTopic::SignalsValidated),
                            TopicName::market_ticks(),
                        ],
                        b,
                        "trader",
                        trader,
                    )?)
                }
                Some(BrokerKind::Zerodha) => match &self.zerodha {
                    Some(trader) => {
                        let make: Arc<dyn Fn() -> StageFactory + Send + Sync> =
                            match replace(broker, "trader") {
                                Some(f) => Arc::new(move || f.clone()),
                                None => {
                                    let trader = trader.clone();
                                    Arc::new(move || trader_factory(trader.clone()))
                                }
                            };
                        members.push(self.consume_broker_stage(
                            vec![TopicName::broker(broker, BrokerTopic::SignalsValidated)],
                            b,
                            "trader",
                            BrokerStage::PerRecord(make),
                        )?)
                    }
                    None => tracing::warn!(
                        broker = b,
                        "no zerodha trader: validated signals wait in {b}.signals.validated"
                    ),
                },
                None => {}
            }
            members.push(self.consume_broker_stage(
                vec![
                    TopicName::broker(broker, BrokerTopic::OrdersFilled),
                    TopicName::market_ticks(),
                ],
                b,
                "portfolio",
                BrokerStage::Checkpointed(stages::portfolio_factory(
                    self.settings.clone(),
                    broker.clone(),
                )),
            )?);
        }
        Ok(members)
    }
}
