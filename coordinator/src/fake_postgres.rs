//! In-memory twin of a cluster's Postgres for reconcile tests: a catalog that each statement changes by its
//! [`Effect`](crate::roles::sql::Effect) (it never reads the SQL; the real server proves that in the
//! stand-in tests), and the statements run so far.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::reconcile::roles::Connector;
use crate::roles::catalog::{Current, PgError, Postgres};
use crate::roles::sql::Statement;

#[derive(Default)]
struct State {
    current: Current,
    executed: Vec<(String, String)>,
    /// `Some`: every call fails to connect with this message.
    down: Option<String>,
    /// Statements whose SQL contains this are refused (a role the server will not create, say).
    refuse: Option<String>,
}

#[derive(Clone, Default)]
pub struct FakePostgres(Arc<Mutex<State>>);

impl FakePostgres {
    pub fn set_current(&self, current: Current) {
        self.0.lock().expect("fake postgres").current = current;
    }

    /// The catalog as the statements so far left it.
    pub fn current(&self) -> Current {
        self.0.lock().expect("fake postgres").current.clone()
    }

    pub fn set_down(&self, message: Option<&str>) {
        self.0.lock().expect("fake postgres").down = message.map(String::from);
    }

    /// Refuses every statement whose SQL contains `fragment`, as the server refuses a statement.
    pub fn refuse(&self, fragment: Option<&str>) {
        self.0.lock().expect("fake postgres").refuse = fragment.map(String::from);
    }

    /// (database, sql) of every statement run so far.
    pub fn executed(&self) -> Vec<(String, String)> {
        self.0.lock().expect("fake postgres").executed.clone()
    }

    fn check(&self) -> Result<(), PgError> {
        match &self.0.lock().expect("fake postgres").down {
            Some(m) => Err(PgError::Connect {
                target: "fake".into(),
                message: m.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl Connector for FakePostgres {
    fn connect(&self, _: &str, _: u16, _: &str, _: &str) -> Box<dyn Postgres> {
        Box::new(self.clone())
    }
}

#[async_trait]
impl Postgres for FakePostgres {
    async fn read(&self, _: &BTreeSet<String>) -> Result<Current, PgError> {
        self.check()?;
        Ok(self.0.lock().expect("fake postgres").current.clone())
    }

    async fn execute(&self, statement: &Statement) -> Result<(), PgError> {
        self.check()?;
        let mut state = self.0.lock().expect("fake postgres");
        if let Some(f) = state
            .refuse
            .as_deref()
            .filter(|f| statement.sql.contains(f))
        {
            return Err(PgError::Query {
                what: statement.summary.clone(),
                message: format!("refused by the test ({f})"),
            });
        }
        state.current.apply(&statement.effect);
        state
            .executed
            .push((statement.database.clone(), statement.sql.clone()));
        Ok(())
    }
}
