//! Small Kafka helpers shared by the components, tools and tests.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;
use std::sync::Arc;
use std::time::Duration;

/// Why a topic could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The admin client could not be made, or the request not sent.
    #[error("{0}")]
    Client(#[from] KafkaError),
    /// The brokers answered, refusing the topic.
    #[error("create topic {topic}: {code}")]
    Refused {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

/// A `kafka_extra` entry that is not `key=value`: its position and first characters
/// (never the whole entry, which may be a password typed with the wrong separator).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kafka_extra entry {0} is not key=value")]
pub struct BadExtra(pub String);

impl BadExtra {
    fn of(n: usize, entry: &str) -> BadExtra {
        let start: String = entry.chars().take(6).collect();
        BadExtra(format!("#{} ({start:?}…)", n + 1))
    }
}

/// How every client reaches the brokers: `bootstrap.servers`, then `extra`
/// (`key=value,key=value` librdkafka settings: security such as
/// `security.protocol=SASL_SSL`, `ssl.ca.location=…`), then `sasl.password` from its own
/// secret setting (`kafka_password`, or `kafka_password_file`) when not empty.
pub fn client_config(brokers: &str, extra: &str, password: &str) -> Result<ClientConfig, BadExtra> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (n, kv) in extra
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let (k, v) = kv.split_once('=').ok_or_else(|| BadExtra::of(n, kv))?;
        c.set(k.trim(), v.trim());
    }
    if !password.is_empty() {
        c.set("sasl.password", password);
    }
    Ok(c)
}

/// Create `topic` with `partitions` and the brokers' default replication
/// (`default.replication.factor`: 1 on one node, 3 on the drills' cluster); an existing
/// topic is fine.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), TopicError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    create_topic_on(&client, topic, partitions)
}

/// [`create_topic`] through a client configured by [`client_config`] (a secured cluster).
pub fn create_topic_on(
    client: &ClientConfig,
    topic: &str,
    partitions: i32,
) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results = block_on(admin.create_topics(
        &[NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(-1),
        )],
        &opts,
    ))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Refused { topic, code }),
        }
    }
    Ok(())
}

/// Delete `topic` (a missing one is fine): a bench's scratch topics must not pile up on
/// the broker, whose GC pauses grow with the partitions it holds.
pub fn delete_topic_on(client: &ClientConfig, topic: &str) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = client.create()?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    for r in block_on(admin.delete_topics(&[topic], &opts))? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => return Err(TopicError::Refused { topic, code }),
        }
    }
    Ok(())
}

/// Drive one future to completion on this thread (rdkafka's admin API is async; the
/// components are not).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(20)),
        }
    }
}
