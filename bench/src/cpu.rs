//! Where the CPU went during a phase of the benchmark, by process group, read from `/proc`
//! (Linux). PostgreSQL, RabbitMQ, the worker and the load generator share one machine, so the
//! CPU time each spends per erasure is what bounds the rates the benchmark compares.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc`'s CPU times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The process groups, as the table names them.
pub const GROUPS: [&str; 4] = ["postgres", "rabbitmq", "worker", "client"];

/// Cumulative CPU ticks by group, and of the whole machine.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    ticks: BTreeMap<&'static str, u64>,
    busy: u64,
}

/// Which processes belong to which group.
#[derive(Clone, Copy, Debug)]
pub struct Meter {
    /// The PostgreSQL server's main process, whose reaped children (backends that ended) are
    /// counted with it; `None` when the server is not on this machine.
    pub postmaster: Option<u32>,
    /// The worker process, while there is one.
    pub worker: Option<u32>,
}

/// CPU by group over one or more phases, and the erasures done in them.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Milliseconds of CPU by group.
    ms: BTreeMap<&'static str, f64>,
    /// Busy CPU of the whole machine, in core-seconds.
    busy: f64,
    /// Wall-clock seconds the samples span.
    wall: f64,
    /// Seconds the erasures took, by the contender's own measure.
    seconds: f64,
    erasures: u64,
    /// WAL the server wrote meanwhile, in bytes.
    wal_bytes: f64,
}

impl Meter {
    pub fn sample(&self) -> Sample {
        let mut ticks: BTreeMap<&'static str, u64> = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Sample::default();
        };
        let own = std::process::id();
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(stat) = Stat::read(pid) else {
                continue;
            };
            let group = if Some(pid) == self.worker {
                "worker"
            } else if pid == own {
                // The load generator: this process and the pgbench runs it waited for.
                *ticks.entry("client").or_default() += stat.own + stat.children;
                continue;
            } else if stat.comm == "pgbench" {
                "client"
            } else if stat.comm == "postgres" && self.postmaster.is_some() {
                if Some(pid) == self.postmaster {
                    *ticks.entry("postgres").or_default() += stat.children;
                }
                "postgres"
            } else if stat.comm == "beam.smp" {
                "rabbitmq"
            } else {
                continue;
            };
            *ticks.entry(group).or_default() += stat.own;
        }
        Sample {
            ticks,
            busy: machine_busy().unwrap_or(0),
        }
    }
}

impl Sample {
    /// What happened between `self` and `later` (`wall` seconds apart), in a phase that did
    /// `erasures` in `seconds` by the contender's own measure.
    pub fn until(&self, later: &Sample, wall: f64, erasures: u64, seconds: f64) -> Usage {
        let ms = GROUPS
            .iter()
            .map(|g| {
                let before = self.ticks.get(g).copied().unwrap_or(0);
                let after = later.ticks.get(g).copied().unwrap_or(0);
                (
                    *g,
                    after.saturating_sub(before) as f64 / TICKS_PER_SECOND * 1000.0,
                )
            })
            .collect();
        Usage {
            ms,
            busy: later.busy.saturating_sub(self.busy) as f64 / TICKS_PER_SECOND,
            wall,
            seconds,
            erasures,
            wal_bytes: 0.0,
        }
    }
}

impl Usage {
    /// Adds another phase of the same contender.
    pub fn add(&mut self, other: &Usage) {
        for (group, ms) in &other.ms {
            *self.ms.entry(group).or_default() += ms;
        }
        self.busy += other.busy;
        self.wall += other.wall;
        self.seconds += other.seconds;
        self.erasures += other.erasures;
        self.wal_bytes += other.wal_bytes;
    }

    /// The phase wrote `bytes` of WAL.
    pub fn with_wal(mut self, bytes: f64) -> Self {
        self.wal_bytes = bytes;
        self
    }

    /// Erasures per second over all its phases.
    pub fn rate(&self) -> f64 {
        self.erasures as f64 / self.seconds.max(1e-9)
    }

    /// Milliseconds of CPU per erasure that `group` spent.
    pub fn per_erasure_ms(&self, group: &str) -> f64 {
        self.ms.get(group).copied().unwrap_or(0.0) / self.erasures.max(1) as f64
    }

    /// How many cores the machine kept busy on average.
    pub fn busy_cores(&self) -> f64 {
        self.busy / self.wall.max(1e-9)
    }

    /// "postgres 2.41, rabbitmq 0.40, worker 0.38, client 0.03 (1.97 cores busy; WAL 212 KiB)"
    pub fn describe(&self) -> String {
        let groups: Vec<String> = GROUPS
            .iter()
            .filter_map(|g| {
                let ms = self.per_erasure_ms(g);
                (ms > 0.0).then(|| format!("{g} {ms:.2}"))
            })
            .collect();
        format!(
            "{} ({:.2} cores busy; WAL {:.0} KiB)",
            groups.join(", "),
            self.busy_cores(),
            self.wal_bytes / self.erasures.max(1) as f64 / 1024.0
        )
    }
}

struct Stat {
    comm: String,
    /// User and system ticks of the process itself.
    own: u64,
    /// User and system ticks of its children that ended and were waited for.
    children: u64,
}

impl Stat {
    fn read(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(&text)
    }

    /// `/proc/<pid>/stat`: the command name is in parentheses (and may hold spaces); fields 14
    /// to 17 (utime, stime, cutime, cstime) follow it at 11 to 14 counted from the state.
    fn parse(text: &str) -> Option<Self> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_string();
        let fields: Vec<u64> = text
            .get(close + 2..)?
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let [utime, stime, cutime, cstime] = fields[..] else {
            return None;
        };
        Some(Self {
            comm,
            own: utime + stime,
            children: cutime + cstime,
        })
    }
}

/// Busy ticks of all CPUs since boot: everything in `/proc/stat`'s first line but idle and
/// iowait.
fn machine_busy() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = fields.iter().sum();
    Some(total - fields.get(3)? - fields.get(4)?)
}

/// The parent of process `pid` (for a PostgreSQL backend, the postmaster).
pub fn parent_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = text.rfind(')')?;
    text.get(close + 2..)?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_the_command_and_its_cpu() {
        let line =
            "2209 (postgres) S 1 2209 2209 0 -1 4194560 1918 1200 0 0 17 9 3000 400 20 0 1 0";
        let stat = Stat::parse(line).unwrap();
        assert_eq!(stat.comm, "postgres");
        assert_eq!(stat.own, 26);
        assert_eq!(stat.children, 3400);
        let spaced = "7 (beam.smp worker) R 1 7 7 0 -1 0 0 0 0 0 5 6 7 8";
        let stat = Stat::parse(spaced).unwrap();
        assert_eq!(stat.comm, "beam.smp worker");
        assert_eq!((stat.own, stat.children), (11, 15));
    }

    #[test]
    fn this_process_is_measured() {
        let meter = Meter {
            postmaster: None,
            worker: None,
        };
        let before = meter.sample();
        let mut x: u64 = 0;
        let started = std::time::Instant::now();
        // Busy until the meter has seen 150 ms of this process's CPU (on a busy machine that
        // takes longer than 150 ms of wall time), or 20 s have passed.
        while before
            .until(&meter.sample(), 0.3, 1, 0.3)
            .per_erasure_ms("client")
            < 150.0
            && started.elapsed() < std::time::Duration::from_secs(20)
        {
            for _ in 0..100_000 {
                x = x.wrapping_mul(31).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let usage = before.until(&meter.sample(), 0.3, 1, 0.3);
        assert!(usage.per_erasure_ms("client") >= 100.0, "{usage:?}");
        assert!(usage.busy_cores() > 0.0);
        let mut twice = usage.clone();
        twice.add(&usage);
        assert_eq!(
            twice.per_erasure_ms("client"),
            usage.per_erasure_ms("client")
        );
        assert!((twice.rate() - 1.0 / 0.3).abs() < 1e-6);
    }
}
