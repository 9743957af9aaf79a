//! Commands Patroni runs at lifecycle points: `post_init` after bootstrap and `on_role_change`.

pub mod on_role_change;
pub mod post_init;
