//! Simulated time drives the engine's deadlines: a statement whose reads are slow on the
//! simulated disk times out after the simulated statement timeout, at the same simulated
//! instant on every run, however fast the machine; with no simulated latency the same
//! statement runs to the end, however long it takes for real.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use sila_sqlite::broker::executor::{Executor, Stepper};
use sila_sqlite::clock::Clock;
use sila_sqlite::vfs::Vfs;
use sila_sqlite::{BrokerOptions, ErrorCode, Workspace, WorkspaceOptions};
use sila_sqlite_sim::memfs::{Faults, LatencySink, MemFs};
use sila_sqlite_sim::world::SimClock;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const MANIFEST: &str =
    r#"{"capabilities":{"sqlite":{"enabled":true,"dbs":[{"name":"main","maxSizeMB":16}],"tier":"basic"}}}"#;
const SCAN: &str = "SELECT count(*), sum(length(b)) FROM t";

/// Runs the scan on a fresh simulated disk; returns its outcome and the simulated time (ms)
/// it ended at.
fn scan(slow_reads: bool) -> (Result<(), ErrorCode>, u128) {
    let fs = MemFs::new();
    fs.create_dir(Path::new("/ws")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs.set_seed(42);
    let clock = Arc::new(SimClock::default());
    let sink = clock.clone();
    fs.set_latency_sink(Some(LatencySink(Arc::new(move |ms| sink.advance(ms)))));
    let vfs: Arc<dyn Vfs> = Arc::new(fs.clone());
    {
        let options = WorkspaceOptions {
            uuid_seed: Some(7),
            clock: clock.clone(),
            broker: BrokerOptions {
                statement_timeout: Duration::from_millis(200),
                ..BrokerOptions::default()
            },
            executor: Some(Arc::new(Stepper::new(64)) as Arc<dyn Executor>),
            create_if_missing: true,
            audit: Default::default(),
        };
        let ws = Workspace::open_with(vfs, PathBuf::from("/ws"), options).unwrap();
        ws.register_app("com.example.time", MANIFEST).unwrap();
        let db = ws.open_app("com.example.time").unwrap().open("main").unwrap();
        db.exec("CREATE TABLE t (b BLOB)", &[]).unwrap();
        db.exec(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000) \
             INSERT INTO t SELECT zeroblob(500) FROM c",
            &[],
        )
        .unwrap();
        // From here every read of the simulated disk takes 1-5 simulated milliseconds.
        if slow_reads {
            fs.set_faults(Faults { slow_io_bp: 10_000, slow_io_ms_max: 5, ..Faults::default() });
        }
        let started = clock.monotonic();
        let result = db.query(SCAN, &[]).map(|_| ()).map_err(|e| e.code());
        (result, (clock.monotonic() - started).as_millis())
    }
}

#[test]
fn simulated_latency_times_a_statement_out_the_same_way_every_run() {
    let (first, first_ms) = scan(true);
    assert_eq!(first, Err(ErrorCode::Timeout));
    assert!(first_ms >= 200, "timed out after {first_ms} simulated ms, not before the 200 ms timeout");
    let (second, second_ms) = scan(true);
    assert_eq!((second, second_ms), (first, first_ms), "same seed, same simulated instant");
    let (calm, calm_ms) = scan(false);
    assert_eq!(calm, Ok(()), "no simulated latency: the same scan finishes");
    assert_eq!(calm_ms, 0);
}
