//! The workspace's metrics in the Prometheus text exposition format (through the
//! `prometheus-client` crate's encoder, so names, escaping and histogram layout follow the
//! format): per database, requests, errors by code, latency histogram, rows, checkpoints
//! (count, pages, time), connections, page-cache hits, sizes and the oldest read's age; per
//! app, the quota and the ledger.
//!
//! Counters count since the workspace was opened in this process (they are the broker's
//! in-memory metrics); sizes and the ledger are read at the scrape.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::api::DbStats;
use crate::store::Ledger;

/// Label pairs of one series.
type Labels = Vec<(&'static str, String)>;

/// What one scrape shows: the active databases' statistics and every app's ledger.
#[derive(Debug)]
struct Scrape {
    dbs: Vec<DbStats>,
    apps: Vec<(String, Ledger)>,
}

/// Encodes `dbs` and `apps` as Prometheus text (ending with `# EOF`).
pub(crate) fn encode(dbs: Vec<DbStats>, apps: Vec<(String, Ledger)>) -> crate::Result<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { dbs, apps }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .map_err(|e| crate::Error::internal(format!("encoding the metrics: {e}")))?;
    Ok(out)
}

fn db_labels(d: &DbStats) -> Labels {
    vec![("app", d.app_id.clone()), ("db", d.db.clone())]
}

/// One metric family: its descriptor, then one sample per series.
fn family<T>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels, T)>,
    mut sample: impl FnMut(prometheus_client::encoding::MetricEncoder<'_>, T) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        sample(metric.encode_family(&labels)?, value)?;
    }
    Ok(())
}

/// A counter family of whole counts (`u64`) or of seconds (`f64`).
fn counters<T>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, T)>,
) -> std::fmt::Result
where
    ConstCounter<T>: EncodeMetric,
{
    family(encoder, name, help, MetricType::Counter, series, |m, v| ConstCounter::new(v).encode(m))
}

/// A gauge family of seconds (fractional).
fn seconds_gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, f64)>,
) -> std::fmt::Result {
    family(encoder, name, help, MetricType::Gauge, series, |m, v| ConstGauge::new(v).encode(m))
}

fn gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    family(encoder, name, help, MetricType::Gauge, series, |m, v| {
        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(m)
    })
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let per_db = |f: fn(&DbStats) -> u64| self.dbs.iter().map(move |d| (db_labels(d), f(d)));
        let requests = self.dbs.iter().flat_map(|d| {
            [("query", d.metrics.queries), ("exec", d.metrics.execs)].map(|(kind, n)| {
                let mut labels = db_labels(d);
                labels.push(("kind", kind.to_string()));
                (labels, n)
            })
        });
        counters(&mut e, "sila_requests", "Requests run (queries and execs), failed or not", requests)?;
        let errors = self.dbs.iter().flat_map(|d| {
            d.metrics.errors.iter().map(|(code, n)| {
                let mut labels = db_labels(d);
                labels.push(("code", code.name().to_string()));
                (labels, *n)
            })
        });
        counters(&mut e, "sila_errors", "Requests refused or failed, by error code", errors)?;
        let latencies = self.dbs.iter().map(|d| (db_labels(d), &d.metrics));
        family(
            &mut e,
            "sila_request_duration_seconds",
            "Latency of requests (2 significant digits)",
            MetricType::Histogram,
            latencies,
            |mut m, s| {
                let buckets: Vec<(f64, u64)> = s
                    .latency_buckets
                    .iter()
                    .map(|(le_us, n)| (*le_us as f64 / 1e6, *n))
                    .chain(std::iter::once((f64::MAX, 0)))
                    .collect();
                m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    s.latency_us_sum as f64 / 1e6,
                    s.latency_count,
                    &buckets,
                    None,
                )
            },
        )?;
        counters(
            &mut e,
            "sila_rows_read",
            "Rows returned by successful requests",
            per_db(|d| d.metrics.rows_read),
        )?;
        counters(
            &mut e,
            "sila_rows_written",
            "Rows changed by successful requests",
            per_db(|d| d.metrics.rows_written),
        )?;
        counters(&mut e, "sila_checkpoints", "WAL checkpoints run", per_db(|d| d.metrics.checkpoints))?;
        counters(
            &mut e,
            "sila_checkpoints_failed",
            "WAL checkpoints that failed (IO, or the WAL was busy)",
            per_db(|d| d.metrics.checkpoints_failed),
        )?;
        counters(
            &mut e,
            "sila_checkpoints_incomplete",
            "Checkpoints that left frames in the WAL because a reader held them (starvation when it keeps growing)",
            per_db(|d| d.metrics.checkpoints_incomplete),
        )?;
        counters(
            &mut e,
            "sila_checkpoint_pages",
            "Pages the successful checkpoints copied from the WAL into the database file",
            per_db(|d| d.metrics.checkpoint_pages),
        )?;
        counters(
            &mut e,
            "sila_checkpoint_seconds",
            "Time the successful checkpoints took",
            self.dbs.iter().map(|d| (db_labels(d), d.metrics.checkpoint_us as f64 / 1e6)),
        )?;
        counters(&mut e, "sila_cache_hits", "Page-cache hits", per_db(|d| d.metrics.cache_hits))?;
        counters(&mut e, "sila_cache_misses", "Page-cache misses", per_db(|d| d.metrics.cache_misses))?;
        counters(
            &mut e,
            "sila_slow_queries",
            "Statements at or over the slow-query threshold",
            per_db(|d| d.metrics.slow_queries),
        )?;
        gauges(&mut e, "sila_connections", "SQLite connections open now", per_db(|d| d.connections as u64))?;
        gauges(&mut e, "sila_database_bytes", "Bytes of the live database file", per_db(|d| d.db_bytes))?;
        gauges(&mut e, "sila_wal_bytes", "Bytes of the live database's WAL", per_db(|d| d.wal_bytes))?;
        seconds_gauges(
            &mut e,
            "sila_oldest_read_seconds",
            "How long the oldest read running now has run (it holds back checkpoints past its snapshot)",
            self.dbs.iter().map(|d| (db_labels(d), d.oldest_read.as_secs_f64())),
        )?;
        let app = |id: &String| vec![("app", id.clone())];
        gauges(
            &mut e,
            "sila_quota_bytes",
            "The app's storage quota",
            self.apps.iter().map(|(id, l)| (app(id), l.quota_bytes)),
        )?;
        let usage = self.apps.iter().flat_map(|(id, l)| {
            [
                ("live", l.live_bytes),
                ("snapshots", l.snapshot_bytes),
                ("in_flight", l.in_flight_bytes),
                ("garbage", l.garbage_bytes),
            ]
            .map(|(kind, n)| {
                let mut labels = app(id);
                labels.push(("kind", kind.to_string()));
                (labels, n)
            })
        });
        gauges(&mut e, "sila_quota_used_bytes", "Bytes charged to the app's quota, by kind", usage)?;
        Ok(())
    }
}
