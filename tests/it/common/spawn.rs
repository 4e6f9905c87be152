//! Child processes and mock brokers that never overlap: a spawn never copies a listener a
//! broker going down or up is about to close or bind again.

use std::collections::HashSet;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

use comm100_bridge::config::Config;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use super::*;

/// Forking copies every descriptor of this process until the child has exec'd and closed
/// its close-on-exec ones, the mock brokers' listening sockets included. A broker taken
/// down closes its listener and binds the same port again at once; if a child still holds
/// the old listener, that bind fails and librdkafka aborts the whole test binary. So a
/// spawn ([`Spawn`]) and a broker going down or up ([`Cluster`]) never overlap.
/// `clippy.toml` forbids the unguarded calls.
static FORKING: RwLock<()> = RwLock::new(());

fn forking() -> RwLockReadGuard<'static, ()> {
    FORKING.read().unwrap_or_else(PoisonError::into_inner)
}

/// The sockets (`socket:[inode]`) among the descriptors in `fd_dir`; `None` once the
/// process is gone.
fn sockets(fd_dir: &str) -> Option<HashSet<String>> {
    let entries = std::fs::read_dir(fd_dir).ok()?;
    Some(
        entries
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target.starts_with("socket:"))
            .collect(),
    )
}

/// This process's sockets that a child must not keep: those marked close-on-exec (the mock
/// brokers' listeners among them).
fn close_on_exec_sockets() -> HashSet<String> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            let info = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                e.file_name().to_string_lossy()
            ))
            .ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            let cloexec = u32::from_str_radix(flags.trim(), 8).ok()? & 0o2_000_000 != 0;
            (cloexec && target.starts_with("socket:")).then_some(target)
        })
        .collect()
}

/// A mock cluster whose brokers go down and up only while no child is being spawned.
pub struct Cluster(MockCluster<'static, DefaultProducerContext>);

impl Cluster {
    #[allow(clippy::disallowed_methods)]
    pub fn broker_down(&self, broker_id: i32) -> rdkafka::error::KafkaResult<()> {
        let _alone = FORKING.write().unwrap_or_else(PoisonError::into_inner);
        self.0.broker_down(broker_id)
    }

    #[allow(clippy::disallowed_methods)]
    pub fn broker_up(&self, broker_id: i32) -> rdkafka::error::KafkaResult<()> {
        let _alone = FORKING.write().unwrap_or_else(PoisonError::into_inner);
        self.0.broker_up(broker_id)
    }
}

impl std::ops::Deref for Cluster {
    type Target = MockCluster<'static, DefaultProducerContext>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// `Command`'s spawning methods, each while no mock broker is going down or up.
pub trait Spawn {
    fn spawn_child(&mut self) -> std::io::Result<Child>;
    /// Like `Command::output`: standard input closed, output and errors captured.
    fn run(&mut self) -> std::io::Result<Output>;
    /// Like `Command::status`: the child's standard streams are this process's.
    fn run_status(&mut self) -> std::io::Result<ExitStatus>;
}

impl Spawn for Command {
    #[allow(clippy::disallowed_methods)]
    fn spawn_child(&mut self) -> std::io::Result<Child> {
        let _spawning = forking();
        let ours = close_on_exec_sockets();
        let child = self.spawn()?;
        // `spawn` returns once the child execs, and Linux closes the child's close-on-exec
        // descriptors just after that: until then it still holds this process's listeners.
        let fds = format!("/proc/{}/fd", child.id());
        while sockets(&fds).is_some_and(|held| !held.is_disjoint(&ours)) {
            std::thread::yield_now();
        }
        Ok(child)
    }

    fn run(&mut self) -> std::io::Result<Output> {
        self.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_child()?
            .wait_with_output()
    }

    fn run_status(&mut self) -> std::io::Result<ExitStatus> {
        self.spawn_child()?.wait()
    }
}

/// A mock cluster with every bridge topic created.
pub fn cluster() -> Cluster {
    cluster_of(1)
}

/// A mock cluster of one broker and no topic: each test creates what it needs.
pub fn bare_cluster() -> Cluster {
    Cluster(MockCluster::new(1).unwrap())
}

/// A mock cluster of `brokers` brokers with every bridge topic created, the DLQ among them.
pub fn cluster_of(brokers: i32) -> Cluster {
    let cluster = Cluster(MockCluster::new(brokers).unwrap());
    let defaults = Config::load_with_env(None, Some(Default::default())).unwrap();
    for topic in comm100_bridge::topics::expected(&defaults) {
        cluster.create_topic(&topic, PARTITIONS, 1).unwrap();
    }
    cluster
}
