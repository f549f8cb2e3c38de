//! Test helpers, by concern: the application under test and its isolation ([`app`]), the
//! broker ([`broker`]), the reference schema's data ([`seeding`]), and a database the worker
//! has not prepared, for the commands that must leave it as they found it ([`fresh`]), and
//! erasing on schemas of the tests' own ([`plans`]).

mod app;
mod broker;
mod fresh;
pub mod plans;
mod seeding;

pub use app::{ScratchDatabase, TestApp, database_server};
pub use fresh::{FreshDatabase, database_exists};
pub use seeding::Shape;
