//! Zero exhaust: the worker's sessions leave the identifiers they erase nowhere new, the
//! server's log included.
//!
//! A statement's text never holds an identifier (every value is a bound parameter; the
//! statements are made from the plan once, at start), but the server can still log what a
//! session sends: its statements with their parameters (`log_statement`, the duration and
//! sampling settings), the parameters of a statement that failed, and the `DETAIL` of an error
//! (a foreign key raced by a concurrent insert names the customer's key there). Each of the
//! worker's sessions silences all of them in its start-up packet, for this session only
//! ([`QUIET`]), where its role may: a superuser may set them all; from PostgreSQL 15 any role
//! may be granted them (`GRANT SET ON PARAMETER log_statement, ... TO erasure`). A setting the
//! role may not set would refuse the connection, so the pool asks first ([`Logging::read`],
//! one connection when the pool is made) and sets only what it may.
//!
//! [`Logging::leaks`] then says what still reaches the log with the server's settings as they
//! stand, and the fix for each; `erasure plan` prints it, the worker logs a warning at start
//! (`erasure.require_quiet_logging = true` refuses to start instead).

use sqlx::PgConnection;

/// A logging setting, the value that silences it for a session, and the server version
/// (`server_version_num`) that knows it.
#[derive(Clone, Copy, Debug)]
pub struct Quiet {
    pub name: &'static str,
    pub value: &'static str,
    pub since: i32,
}

/// What each of the worker's sessions sets, where its role may.
pub const QUIET: &[Quiet] = &[
    Quiet {
        name: "log_statement",
        value: "none",
        since: 0,
    },
    Quiet {
        name: "log_min_duration_statement",
        value: "-1",
        since: 0,
    },
    Quiet {
        name: "log_min_duration_sample",
        value: "-1",
        since: 130000,
    },
    Quiet {
        name: "log_transaction_sample_rate",
        value: "0",
        since: 120000,
    },
    Quiet {
        name: "log_parameter_max_length",
        value: "0",
        since: 130000,
    },
    Quiet {
        name: "log_parameter_max_length_on_error",
        value: "0",
        since: 130000,
    },
    Quiet {
        name: "log_error_verbosity",
        value: "terse",
        since: 0,
    },
];

/// One logging setting as a session of the worker's role finds it before setting anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub name: &'static str,
    /// The value the session has from the server, the database and the role.
    pub value: String,
    /// Whether the role may set it for its own session.
    pub may_set: bool,
    /// The value that silences it.
    pub quiet: &'static str,
}

/// What the server's logging would make of the worker's sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Logging {
    pub server_version: i32,
    /// The role the sessions run as.
    pub role: String,
    pub superuser: bool,
    pub settings: Vec<Found>,
}

/// A way an erased identifier would still reach the server's log, and what stops it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leak {
    /// What is logged, in words.
    pub what: String,
    /// The settings behind it that the role cannot set.
    pub settings: Vec<&'static str>,
}

impl Logging {
    /// Reads the logging settings and the role's right to set each, on a connection made
    /// without the quiet settings.
    pub async fn read(conn: &mut PgConnection) -> Result<Self, sqlx::Error> {
        let (server_version, role, superuser): (i32, String, bool) = sqlx::query_as(
            "SELECT current_setting('server_version_num')::int, current_user::text, \
                    current_setting('is_superuser') = 'on'",
        )
        .fetch_one(&mut *conn)
        .await?;
        let names: Vec<&str> = QUIET
            .iter()
            .filter(|q| q.since <= server_version)
            .map(|q| q.name)
            .collect();
        // PostgreSQL 15 grants settings one by one; before it, only a superuser sets these.
        let may_set = if server_version >= 150000 {
            "s.context = 'user' OR has_parameter_privilege(s.name, 'SET')"
        } else {
            "s.context = 'user' OR current_setting('is_superuser') = 'on'"
        };
        let rows: Vec<(String, String, bool)> = sqlx::query_as(&format!(
            "SELECT s.name::text, s.setting::text, {may_set} FROM pg_settings s WHERE s.name = ANY($1)"
        ))
        .bind(&names)
        .fetch_all(&mut *conn)
        .await?;
        let settings = QUIET
            .iter()
            .filter_map(|q| {
                let (_, value, may_set) = rows.iter().find(|(name, _, _)| name == q.name)?;
                Some(Found {
                    name: q.name,
                    value: value.clone(),
                    may_set: *may_set,
                    quiet: q.value,
                })
            })
            .collect();
        Ok(Self {
            server_version,
            role,
            superuser,
            settings,
        })
    }

    /// The settings the sessions' start-up packet carries: those the role may set.
    pub fn startup_options(&self) -> Vec<(&'static str, String)> {
        self.settings
            .iter()
            .filter(|s| s.may_set)
            .map(|s| (s.name, s.quiet.to_owned()))
            .collect()
    }

    /// The value the worker's sessions run with: the quiet one where the role may set it.
    fn effective(&self, name: &str) -> Option<&str> {
        let found = self.settings.iter().find(|s| s.name == name)?;
        Some(if found.may_set {
            found.quiet
        } else {
            &found.value
        })
    }

    /// The settings among `names` that the role cannot set and that are loud as the server
    /// has them.
    fn stuck(
        &self,
        names: &[&'static str],
        loud: impl Fn(&str, &str) -> bool,
    ) -> Vec<&'static str> {
        self.settings
            .iter()
            .filter(|s| names.contains(&s.name) && !s.may_set && loud(s.name, &s.value))
            .map(|s| s.name)
            .collect()
    }

    /// Whether the worker's sessions' statements reach the log at all.
    fn statements_logged(&self) -> bool {
        let number = |name: &str| {
            self.effective(name)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(-1.0)
        };
        matches!(self.effective("log_statement"), Some("mod" | "all"))
            || number("log_min_duration_statement") >= 0.0
            || number("log_min_duration_sample") >= 0.0
            || number("log_transaction_sample_rate") > 0.0
    }

    /// What of an erasure's values still reaches the server's log from the worker's sessions.
    pub fn leaks(&self) -> Vec<Leak> {
        let mut leaks = Vec::new();
        let number = |name: &str| {
            self.effective(name)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        let loud = |name: &str, value: &str| match name {
            "log_statement" => matches!(value, "mod" | "all"),
            "log_min_duration_statement" | "log_min_duration_sample" => {
                value.parse::<i64>().is_ok_and(|v| v >= 0)
            }
            "log_transaction_sample_rate" => value.parse::<f64>().is_ok_and(|v| v > 0.0),
            "log_parameter_max_length" | "log_parameter_max_length_on_error" => value != "0",
            "log_error_verbosity" => value != "terse",
            _ => false,
        };
        // Statements are logged with their parameters (the identifiers) only when both hold;
        // the role silences either side.
        if self.statements_logged() && number("log_parameter_max_length") != 0 {
            let mut settings = self.stuck(
                &[
                    "log_statement",
                    "log_min_duration_statement",
                    "log_min_duration_sample",
                    "log_transaction_sample_rate",
                ],
                loud,
            );
            settings.extend(self.stuck(&["log_parameter_max_length"], loud));
            leaks.push(Leak {
                what: "the server logs the worker's statements with their parameters, which hold the identifiers each erasure names".into(),
                settings,
            });
        }
        if number("log_parameter_max_length_on_error") != 0 {
            leaks.push(Leak {
                what: "the server logs the parameters of a statement that fails, which hold the identifiers it names".into(),
                settings: self.stuck(&["log_parameter_max_length_on_error"], loud),
            });
        }
        if self
            .effective("log_error_verbosity")
            .is_some_and(|v| v != "terse")
        {
            leaks.push(Leak {
                what: "the server logs the DETAIL of an error, where a constraint names key values (a foreign key raced by a concurrent insert names the customer's key)".into(),
                settings: self.stuck(&["log_error_verbosity"], loud),
            });
        }
        leaks
    }

    pub fn is_quiet(&self) -> bool {
        self.leaks().is_empty()
    }

    /// The grant that lets the role silence `settings` (PostgreSQL 15 and later; before it,
    /// only a superuser can).
    pub fn grant(&self, settings: &[&str]) -> String {
        if self.server_version >= 150000 {
            format!(
                "GRANT SET ON PARAMETER {} TO {};",
                settings.join(", "),
                crate::plan::ident(&self.role)
            )
        } else {
            format!(
                "before PostgreSQL 15 only a superuser can set {}: lower them in postgresql.conf, or for this role (ALTER ROLE {} SET ...)",
                settings.join(", "),
                crate::plan::ident(&self.role)
            )
        }
    }

    /// What `erasure plan` prints of it: one line when quiet, else each leak with its fix.
    pub fn describe(&self) -> String {
        let set: Vec<String> = self
            .startup_options()
            .iter()
            .map(|(name, value)| format!("{name} = {value}"))
            .collect();
        let mut out = String::from("Server logs:\n");
        if set.is_empty() {
            out.push_str(&format!(
                "  the worker's sessions (role {}) may set none of the logging settings\n",
                self.role
            ));
        } else {
            out.push_str(&format!(
                "  the worker's sessions (role {}) set {}\n",
                self.role,
                set.join(", ")
            ));
        }
        let leaks = self.leaks();
        if leaks.is_empty() {
            out.push_str("  nothing an erasure names reaches the server's log from them\n");
        }
        for leak in leaks {
            out.push_str(&format!("  warning: {}", leak.what));
            if !leak.settings.is_empty() {
                out.push_str(&format!(
                    "; the role cannot silence it for its own sessions: {}",
                    self.grant(&leak.settings)
                ));
            }
            out.push('\n');
        }
        out
    }
}

/// At start: a warning for each leak, or (with `require_quiet`) a refusal naming them.
pub fn at_start(logging: &Logging, require_quiet: bool) -> anyhow::Result<()> {
    let leaks = logging.leaks();
    if leaks.is_empty() {
        return Ok(());
    }
    let said: Vec<String> = leaks
        .iter()
        .map(|leak| match leak.settings.is_empty() {
            true => leak.what.clone(),
            false => format!("{} (fix: {})", leak.what, logging.grant(&leak.settings)),
        })
        .collect();
    if require_quiet {
        anyhow::bail!(
            "erasure.require_quiet_logging is set, and the worker's sessions cannot keep what they erase out of the server's log:\n  - {}",
            said.join("\n  - ")
        );
    }
    for what in said {
        tracing::warn!(
            "{what}; README, \"Zero exhaust\" (erasure.require_quiet_logging = true refuses to start instead)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logging(values: &[(&'static str, &str, bool)]) -> Logging {
        Logging {
            server_version: 150000,
            role: "erasure".into(),
            superuser: false,
            settings: QUIET
                .iter()
                .map(|q| {
                    let (_, value, may_set) = values
                        .iter()
                        .find(|(name, _, _)| *name == q.name)
                        .copied()
                        .unwrap_or((q.name, q.value, false));
                    Found {
                        name: q.name,
                        value: value.to_owned(),
                        may_set,
                        quiet: q.value,
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn a_server_that_logs_nothing_leaks_nothing() {
        assert!(logging(&[]).is_quiet());
    }

    #[test]
    fn statements_logged_with_parameters_leak_unless_the_role_silences_either() {
        let loud = logging(&[
            ("log_statement", "all", false),
            ("log_parameter_max_length", "-1", false),
        ]);
        let leaks = loud.leaks();
        assert_eq!(leaks.len(), 1, "{leaks:?}");
        assert_eq!(
            leaks[0].settings,
            ["log_statement", "log_parameter_max_length"]
        );
        assert_eq!(
            loud.grant(&leaks[0].settings),
            "GRANT SET ON PARAMETER log_statement, log_parameter_max_length TO \"erasure\";"
        );
        // Statements logged without their parameters hold no identifier.
        let granted = logging(&[
            ("log_statement", "all", false),
            ("log_parameter_max_length", "-1", true),
        ]);
        assert!(granted.is_quiet(), "{:?}", granted.leaks());
        let silenced = logging(&[
            ("log_statement", "all", true),
            ("log_parameter_max_length", "-1", false),
        ]);
        assert!(silenced.is_quiet());
        assert_eq!(
            silenced.startup_options(),
            [("log_statement", "none".into())]
        );
    }

    #[test]
    fn error_details_and_parameters_on_error_are_leaks_too() {
        let leaks = logging(&[
            ("log_error_verbosity", "default", false),
            ("log_parameter_max_length_on_error", "64", false),
        ])
        .leaks();
        assert_eq!(leaks.len(), 2, "{leaks:?}");
        assert!(at_start(&logging(&[("log_error_verbosity", "verbose", false)]), true).is_err());
        assert!(at_start(&logging(&[("log_error_verbosity", "verbose", true)]), true).is_ok());
    }
}
