//! Test helpers, by concern: the application under test and its isolation ([`app`]), the
//! broker ([`broker`]), and the reference schema's data ([`seeding`]).

mod app;
mod broker;
mod seeding;

pub use app::{ScratchDatabase, TestApp, database_server};
pub use seeding::Shape;
