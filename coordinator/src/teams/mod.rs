//! Human users: the members of the cluster's team and of the teams `PostgresTeam` resources add, as
//! upstream's `initHumanUsers` (postgres-operator `pkg/cluster/cluster.go`) and `PostgresTeamMap`
//! (`pkg/teams/postgres_team.go`) resolve them. The resolution is pure; `api` fetches members from the Teams
//! API, keeping the last good answer while it is down.

pub mod api;

use std::collections::{BTreeMap, BTreeSet};

use pgherd_shared::crd::postgres_team::PostgresTeamSpec;

use crate::config::OperatorConfig;
use crate::roles::desired::human_role;
use crate::roles::model::Role;

/// All `PostgresTeam` resources of the watched namespaces, merged by team id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TeamMap {
    additional_teams: BTreeMap<String, BTreeSet<String>>,
    superuser_teams: BTreeMap<String, BTreeSet<String>>,
    members: BTreeMap<String, BTreeSet<String>>,
}

impl TeamMap {
    pub fn new<'a>(specs: impl IntoIterator<Item = &'a PostgresTeamSpec>) -> Self {
        let mut m = TeamMap::default();
        let merge = |into: &mut BTreeMap<String, BTreeSet<String>>,
                     from: &Option<BTreeMap<String, Vec<String>>>| {
            for (team, list) in from.iter().flatten() {
                into.entry(team.clone())
                    .or_default()
                    .extend(list.iter().cloned());
            }
        };
        for s in specs {
            merge(&mut m.additional_teams, &s.additional_teams);
            merge(&mut m.superuser_teams, &s.additional_superuser_teams);
            merge(&mut m.members, &s.additional_members);
        }
        m
    }

    /// Teams reachable from `team` through `edges`, transitively, `team` itself excluded; cycles end.
    fn reachable(edges: &BTreeMap<String, BTreeSet<String>>, team: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = vec![team];
        while let Some(t) = todo.pop() {
            for next in edges.get(t).into_iter().flatten() {
                if next != team && seen.insert(next.clone()) {
                    todo.push(next);
                }
            }
        }
        seen
    }

    /// `additionalTeams` of `team`, and theirs.
    pub fn additional_teams(&self, team: &str) -> BTreeSet<String> {
        Self::reachable(&self.additional_teams, team)
    }

    /// `additionalSuperuserTeams` of `team`, and the additional teams of those.
    pub fn superuser_teams(&self, team: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for t in self.superuser_teams.get(team).into_iter().flatten() {
            out.insert(t.clone());
            out.extend(self.additional_teams(t));
        }
        out
    }

    /// `additionalMembers` of `team` (virtual teams need no Teams API).
    pub fn members(&self, team: &str) -> BTreeSet<String> {
        self.members.get(team).cloned().unwrap_or_default()
    }
}

/// The human roles of a cluster of `team_id`. `api_members` answers for one team from the Teams API (`None`:
/// the API is off or has no answer, so only `additionalMembers` count).
pub fn human_roles(
    cfg: &OperatorConfig,
    team_id: &str,
    map: &TeamMap,
    api_members: &dyn Fn(&str) -> Option<Vec<String>>,
) -> Vec<Role> {
    let teams = cfg.raw.teams_api.clone().unwrap_or_default();
    let crd = teams.enable_postgres_team_crd.unwrap_or(false);
    let crd_superusers = crd && teams.enable_postgres_team_crd_superusers.unwrap_or(false);
    let team_superuser = teams.enable_team_superuser.unwrap_or(false);
    let members_of = |team: &str| -> BTreeSet<String> {
        let mut m = if crd {
            map.members(team)
        } else {
            BTreeSet::new()
        };
        m.extend(api_members(team).into_iter().flatten());
        m
    };

    let mut superuser_teams: Vec<String> = Vec::new();
    if crd_superusers {
        superuser_teams.extend(map.superuser_teams(team_id));
    }
    for t in teams.postgres_superuser_teams.iter().flatten() {
        if !superuser_teams.contains(t) {
            superuser_teams.push(t.clone());
        }
    }
    // Later entries win a name, as upstream resolves collisions of equal origin.
    let mut roles: BTreeMap<String, Role> = BTreeMap::new();
    let mut add = |team: &str, superuser: bool| {
        for name in members_of(team) {
            roles.insert(name.clone(), human_role(cfg, &name, superuser));
        }
    };
    for t in &superuser_teams {
        add(t, true);
    }
    if crd {
        for t in map.additional_teams(team_id) {
            if !superuser_teams.contains(&t) {
                add(&t, false);
            }
        }
    }
    if !superuser_teams.iter().any(|t| t == team_id) {
        add(team_id, team_superuser);
    }
    roles.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OperatorConfig;
    use crate::roles::model::Flag;
    use pgherd_shared::crd::operator_configuration::TeamsApiConfiguration;

    fn spec(
        teams: &[(&str, &[&str])],
        su: &[(&str, &[&str])],
        members: &[(&str, &[&str])],
    ) -> PostgresTeamSpec {
        let m = |l: &[(&str, &[&str])]| {
            Some(
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                    .collect(),
            )
        };
        PostgresTeamSpec {
            additional_teams: m(teams),
            additional_superuser_teams: m(su),
            additional_members: m(members),
        }
    }

    fn cfg(crd: bool, superusers: &[&str]) -> OperatorConfig {
        let mut c = OperatorConfig::default();
        c.raw.teams_api = Some(TeamsApiConfiguration {
            enable_postgres_team_crd: Some(crd),
            enable_postgres_team_crd_superusers: Some(crd),
            postgres_superuser_teams: Some(superusers.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        });
        c
    }

    fn names(roles: &[Role]) -> Vec<(String, bool)> {
        roles
            .iter()
            .map(|r| (r.name.clone(), r.flags.contains(&Flag::Superuser)))
            .collect()
    }

    #[test]
    fn additional_teams_are_transitive_and_cycles_end() {
        let map = TeamMap::new(&[
            spec(&[("acid", &["b"]), ("b", &["c", "acid"])], &[], &[]),
            spec(&[("c", &["b"])], &[], &[]),
        ]);
        assert_eq!(
            map.additional_teams("acid"),
            BTreeSet::from(["b".to_string(), "c".to_string()])
        );
    }

    #[test]
    fn members_from_the_api_the_crd_and_superuser_teams() {
        let map = TeamMap::new(&[spec(
            &[("acid", &["friends"])],
            &[("acid", &["dba"])],
            &[("acid", &["virtual.jane"]), ("friends", &["bob"])],
        )]);
        let api = |team: &str| match team {
            "acid" => Some(vec!["alice".to_string(), "root".to_string()]),
            "dba" => Some(vec!["root".to_string()]),
            "ops" => None,
            _ => Some(vec![]),
        };
        let roles = human_roles(&cfg(true, &["ops"]), "acid", &map, &api);
        assert_eq!(
            names(&roles),
            [
                ("alice".to_string(), false),
                ("bob".to_string(), false),
                // The cluster's own team wins the name: upstream's later entry.
                ("root".to_string(), false),
                ("virtual.jane".to_string(), false),
            ]
        );
        let alice = &roles[0];
        assert_eq!(alice.password, crate::roles::model::Password::Null);
        assert!(alice.member_of.contains("zalandos"));
        assert!(alice.member_of.contains("admin"));

        // Without the CRD only the API counts.
        let roles = human_roles(&cfg(false, &[]), "acid", &map, &api);
        assert_eq!(
            names(&roles),
            [("alice".into(), false), ("root".into(), false)]
        );
    }

    #[test]
    fn a_cluster_of_a_superuser_team_has_only_superusers() {
        let api = |_: &str| Some(vec!["root".to_string()]);
        let roles = human_roles(&cfg(false, &["acid"]), "acid", &TeamMap::default(), &api);
        assert_eq!(names(&roles), [("root".into(), true)]);
        assert!(!roles[0].member_of.contains("admin"));
    }
}
