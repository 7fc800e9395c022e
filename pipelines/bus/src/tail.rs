//! Reading a topic from outside the pipeline (`graphscaler actions tail`, `audit tail`,
//! `decisions tail`): from its end, its beginning, an offset or a time, as a consumer group member
//! or as no group at all.
//!
//! Without a group, every partition of the topic is assigned at the start asked for and nothing is
//! committed: a tail never moves any stage's position, and two tails do not share messages. With a
//! group, the tail subscribes like a stage (a group with committed offsets goes on from them, a
//! new one starts at the end or the beginning) and commits each message once it is printed, so the
//! next tail of that group goes on after it.

use std::str::FromStr;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::{owned, with_properties, BusConfig, BusError, Received};

/// Where a tail starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// After the last message: only what is published from now on.
    End,
    /// At the oldest message the broker keeps.
    Beginning,
    /// At this offset of every partition.
    Offset(i64),
    /// At the first message of each partition stamped at or after this Unix time, milliseconds.
    TimeMs(i64),
}

impl FromStr for Start {
    type Err = String;

    /// `end`, `beginning`, `offset:N` or `time:T` (T Unix seconds, or a UTC date and time
    /// `YYYY-MM-DDTHH:MM:SS[.frac]Z`).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("`{s}`: {why} (end, beginning, offset:N or time:T, T Unix seconds or YYYY-MM-DDTHH:MM:SSZ)")
        };
        match s {
            "end" => Ok(Start::End),
            "beginning" => Ok(Start::Beginning),
            _ => {
                if let Some(n) = s.strip_prefix("offset:") {
                    let n: i64 = n.parse().map_err(|_| bad("not an offset"))?;
                    if n < 0 {
                        return Err(bad("an offset is at least 0"));
                    }
                    Ok(Start::Offset(n))
                } else if let Some(t) = s.strip_prefix("time:") {
                    let (whole, frac) = graphscaler_schemas::time::parse_instant(t)
                        .ok_or_else(|| bad("not a time"))?;
                    let secs = whole as f64 + frac;
                    if !(0.0..1e11).contains(&secs) {
                        return Err(bad("a time between 1970 and the year 5000"));
                    }
                    Ok(Start::TimeMs((secs * 1000.0) as i64))
                } else {
                    Err(bad("not a start"))
                }
            }
        }
    }
}

/// A reader of one topic ([module docs](self)).
pub struct Tail {
    inner: StreamConsumer,
    group: bool,
    /// With a start at a time: messages stamped before it are passed over (a broker whose
    /// offsets-for-times answer is coarse, as tansu's, still gives only what the time asks for).
    not_before_ms: Option<i64>,
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail").field("group", &self.group).finish()
    }
}

impl Tail {
    /// Opens `topic` on the brokers of `cfg` at `start`, in `group` if given. A group goes on from
    /// its committed offsets, so it takes only `end` or `beginning` (where a new group starts);
    /// an offset or a time is for a tail without a group. The brokers must answer within
    /// `timeout` with the topic's partitions (and, for a time, the offsets at that time).
    pub fn open(
        cfg: &BusConfig,
        topic: &str,
        start: Start,
        group: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, BusError> {
        let mut c = with_properties(ClientConfig::new(), cfg);
        c.set("bootstrap.servers", &cfg.bootstrap)
            .set("client.id", &cfg.client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("fetch.wait.max.ms", "10")
            .set(
                "auto.offset.reset",
                if start == Start::Beginning {
                    "earliest"
                } else {
                    "latest"
                },
            );
        if let Some(g) = group {
            if matches!(start, Start::Offset(_) | Start::TimeMs(_)) {
                return Err(BusError::Unanswered(format!(
                    "group `{g}` goes on from its committed offsets: --from offset:/time: is for a tail without --group"
                )));
            }
            c.set("group.id", g);
            let inner: StreamConsumer = c.create()?;
            inner.subscribe(&[topic])?;
            return Ok(Self {
                inner,
                group: true,
                not_before_ms: None,
            });
        }
        // librdkafka wants a group id even for assigned partitions; nothing is ever committed
        // under this one.
        c.set(
            "group.id",
            format!("graphscaler-tail-{}", std::process::id()),
        );
        let inner: StreamConsumer = c.create()?;
        let meta = inner.fetch_metadata(Some(topic), timeout)?;
        let partitions: Vec<i32> = meta
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(BusError::Unanswered(format!(
                "topic `{topic}` has no partitions on {} (is it created, is the name right?)",
                cfg.bootstrap
            )));
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            let at = match start {
                Start::End => Offset::End,
                Start::Beginning => Offset::Beginning,
                Start::Offset(n) => Offset::Offset(n),
                Start::TimeMs(ms) => Offset::Offset(ms),
            };
            tpl.add_partition_offset(topic, *p, at)?;
        }
        if let Start::TimeMs(_) = start {
            // The offsets of the first messages at or after the time; a partition with none
            // starts at its end.
            let found = inner.offsets_for_times(tpl, timeout)?;
            let mut at = TopicPartitionList::new();
            for e in found.elements() {
                let o = match e.offset() {
                    Offset::Offset(n) if n >= 0 => Offset::Offset(n),
                    _ => Offset::End,
                };
                at.add_partition_offset(topic, e.partition(), o)?;
            }
            tpl = at;
        }
        inner.assign(&tpl)?;
        Ok(Self {
            inner,
            group: false,
            not_before_ms: match start {
                Start::TimeMs(ms) => Some(ms),
                _ => None,
            },
        })
    }

    /// The next message, or `None` if none arrives within `wait`.
    pub async fn next(&self, wait: Duration) -> Result<Option<Received>, BusError> {
        let next = async {
            loop {
                let m = self.inner.recv().await?;
                let stamped = m.timestamp().to_millis();
                let early = matches!((self.not_before_ms, stamped), (Some(t), Some(at)) if at < t);
                if !early {
                    return Ok::<_, BusError>(owned(&m));
                }
            }
        };
        match tokio::time::timeout(wait, next).await {
            Err(_) => Ok(None),
            Ok(r) => r.map(Some),
        }
    }

    /// After `msg` is printed: a group commits it (its next tail goes on after it); without a
    /// group, nothing.
    pub fn done(&self, msg: &Received) -> Result<(), BusError> {
        if !self.group {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&msg.topic, msg.partition, Offset::Offset(msg.offset + 1))?;
        self.inner.commit(&tpl, CommitMode::Sync)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_parse_and_bad_ones_are_named() {
        assert_eq!("end".parse(), Ok(Start::End));
        assert_eq!("beginning".parse(), Ok(Start::Beginning));
        assert_eq!("offset:7".parse(), Ok(Start::Offset(7)));
        assert_eq!(
            "time:1700000000.5".parse(),
            Ok(Start::TimeMs(1_700_000_000_500))
        );
        assert_eq!(
            "time:2023-11-14T22:13:20Z".parse(),
            Ok(Start::TimeMs(1_700_000_000_000))
        );
        for bad in [
            "offset:-1",
            "offset:x",
            "time:yesterday",
            "time:1e300",
            "middle",
        ] {
            let e = bad.parse::<Start>().unwrap_err();
            assert!(e.contains(bad) && e.contains("offset:N"), "{e}");
        }
    }
}
