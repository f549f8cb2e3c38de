//! Why an erasure attempt did not end in an outcome, each cause with its class: retry it, hold
//! the delivery, or give up.

use uuid::Uuid;

use crate::db::{ErrorClass, SafeError, classify};
use crate::deletion::ErrorKey;

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The database refused or failed; its class decides.
    #[error("{}", SafeError(.0))]
    Database(#[from] sqlx::Error),
    /// The customer kept reappearing between the statement and the fresh look after it: a
    /// customer re-created while being erased, over and over. Held and tried again later.
    #[error("the customer changed under every attempt; trying again later")]
    CustomerKeptChanging,
    /// Another request is erasing the customer in chunks: this one waits for it to end, then
    /// finds the customer erased.
    #[error("the customer is being erased in chunks by request {0}; waiting for it")]
    ClaimedByAnotherRequest(Uuid),
}

impl EraseError {
    /// The constraint of the schema that refused the erasure, if one did.
    pub fn constraint(&self) -> Option<String> {
        match self {
            EraseError::Database(e) => crate::db::constraint_of(e),
            _ => None,
        }
    }

    /// How a request that ends on this error is recorded: the error key, and the message
    /// naming what the plan lacks (`plan_gap`) or the error as it may be stored (`internal`).
    pub fn failure(&self) -> (ErrorKey, String) {
        match self {
            EraseError::Database(e) => match crate::db::plan_gap(e) {
                Some(gap) => (ErrorKey::PlanGap, gap),
                None => (ErrorKey::Internal, self.to_string()),
            },
            _ => (ErrorKey::Internal, self.to_string()),
        }
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            EraseError::Database(e) => classify(e),
            EraseError::CustomerKeptChanging | EraseError::ClaimedByAnotherRequest(_) => {
                ErrorClass::Hold
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_on_others_is_held_and_says_so() {
        let claimed = EraseError::ClaimedByAnotherRequest(Uuid::nil());
        assert_eq!(claimed.class(), ErrorClass::Hold);
        assert!(claimed.to_string().contains("in chunks by request"));
        assert_eq!(EraseError::CustomerKeptChanging.class(), ErrorClass::Hold);
        let lost = EraseError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(lost.class(), ErrorClass::Hold);
        assert_eq!(lost.to_string(), "no database connection available in time");
    }
}
