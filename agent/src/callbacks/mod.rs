//! Commands Patroni runs at lifecycle points: `post_init` after bootstrap, `on_role_change`, and the
//! role-labelling `callback-role` (Kubernetes without the Kubernetes DCS).

pub mod callback_role;
pub mod on_role_change;
pub mod post_init;
