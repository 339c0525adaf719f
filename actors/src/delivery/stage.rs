//! What a stage actor receives and returns.

use actix::Message;
use alpha_panda_core::{Classify, EventEnvelope, FailureClass};
use alpha_panda_topics::TopicName;

use crate::store::Effect;

/// One decoded record for a stage actor, with where it came from. Stages learn the broker
/// from `topic`, never from the envelope.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Handled, StageError>")]
pub struct Deliver {
    pub envelope: EventEnvelope,
    pub topic: TopicName,
    pub partition: i32,
    pub offset: i64,
}

/// An event a stage emits, and the topic it goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub topic: TopicName,
    pub envelope: EventEnvelope,
}

/// What handling a record produced: events to publish and store writes to apply with the
/// dedup mark. Both happen once per input, whatever crashes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Handled {
    pub outputs: Vec<Output>,
    pub effects: Vec<Effect>,
}

/// A stage's failure, with its class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class} failure: {message}")]
pub struct StageError {
    pub class: FailureClass,
    pub message: String,
}

impl StageError {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(FailureClass::Transient, message)
    }

    pub fn poison(message: impl Into<String>) -> Self {
        Self::new(FailureClass::Poison, message)
    }

    pub fn infrastructure(message: impl Into<String>) -> Self {
        Self::new(FailureClass::Infrastructure, message)
    }
}

impl Classify for StageError {
    fn class(&self) -> FailureClass {
        self.class
    }
}

/// A stage actor around a plain function: for stages whose logic is a pure function of the
/// record (and for tests of the delivery machinery).
pub struct FnStage<F> {
    f: F,
}

impl<F> FnStage<F>
where
    F: FnMut(&Deliver) -> Result<Handled, StageError> + Unpin + 'static,
{
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> actix::Actor for FnStage<F>
where
    F: FnMut(&Deliver) -> Result<Handled, StageError> + Unpin + 'static,
{
    type Context = actix::Context<Self>;
}

impl<F> actix::Handler<Deliver> for FnStage<F>
where
    F: FnMut(&Deliver) -> Result<Handled, StageError> + Unpin + 'static,
{
    type Result = Result<Handled, StageError>;

    fn handle(&mut self, msg: Deliver, _ctx: &mut Self::Context) -> Self::Result {
        (self.f)(&msg)
    }
}
