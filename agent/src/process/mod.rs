//! Processes the agent starts: who they run as, that they die with the agent, and how their exit statuses
//! reach them while the supervisor reaps every child. Used by the supervisor, the backup engine, replica
//! creation and the upgrade alike, so it depends on none of them.

pub mod children;
mod run_as;

pub use run_as::RunAs;
