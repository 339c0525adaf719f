//! Small stages for delivery tests: real stage actors with simple, checkable logic.

use std::sync::Arc;

use actix::Actor;
use alpha_panda_actors::delivery::stage::FnStage;
use alpha_panda_actors::delivery::worker::StageFactory;
use alpha_panda_actors::delivery::{Deliver, Handled, Output, StageError};
use alpha_panda_actors::store::Effect;
use alpha_panda_core::events::ValidatedSignal;
use alpha_panda_core::{EventBroker, EventData};
use alpha_panda_topics::{BrokerTopic, TopicName};

/// Validates every trading signal as is: one `validated_signal` child per input on the
/// broker's `signals.validated`, and one `INCRBY counter 1` effect per input.
pub fn validate(d: &Deliver, counter_key: &str) -> Result<Handled, StageError> {
    let EventData::TradingSignal(signal) = &d.envelope.data else {
        return Err(StageError::poison(format!(
            "expected a trading_signal, got {}",
            d.envelope.event_type()
        )));
    };
    let broker = d
        .topic
        .broker_name()
        .ok_or_else(|| StageError::poison("signals come from broker topics"))?;
    let out = d.envelope.child(
        EventBroker::Broker(broker.clone()),
        "risk",
        0,
        d.envelope.key.clone(),
        d.envelope.ts,
        EventData::ValidatedSignal(ValidatedSignal {
            original_signal: signal.clone(),
            validated_quantity: signal.quantity,
            validated_price: signal.price,
            risk_checks: [("test".to_owned(), true)].into(),
            timestamp: signal.timestamp,
        }),
    );
    Ok(Handled {
        outputs: vec![Output {
            topic: TopicName::broker(broker, BrokerTopic::SignalsValidated),
            envelope: out,
        }],
        effects: vec![Effect::IncrBy {
            key: counter_key.to_owned(),
            by: 1,
        }],
    })
}

/// A factory of `validate` stage actors.
pub fn validate_factory(counter_key: String) -> StageFactory {
    Arc::new(move || {
        let key = counter_key.clone();
        FnStage::new(move |d: &Deliver| validate(d, &key))
            .start()
            .recipient()
    })
}

/// `validate` as a checkpointed stage (delivery v2), one unit per partition: its state is
/// how many records it validated.
pub fn validate_checkpointed(counter_key: String) -> alpha_panda_actors::delivery::Checkpointed {
    struct Validating {
        key: String,
        validated: u64,
    }
    impl alpha_panda_actors::delivery::unit::CheckpointedStage for Validating {
        fn handle(&mut self, d: &Deliver) -> Result<Handled, StageError> {
            let h = validate(d, &self.key)?;
            self.validated += 1;
            Ok(h)
        }
        fn save(&self) -> serde_json::Value {
            serde_json::json!({ "validated": self.validated })
        }
    }
    alpha_panda_actors::delivery::Checkpointed {
        factory: Arc::new(move |_unit, saved| {
            let validated = saved
                .as_ref()
                .and_then(|v| v["validated"].as_u64())
                .unwrap_or(0);
            Ok(Box::new(Validating {
                key: counter_key.clone(),
                validated,
            })
                as Box<
                    dyn alpha_panda_actors::delivery::unit::CheckpointedStage,
                >)
        }),
        whole_stage: false,
    }
}
