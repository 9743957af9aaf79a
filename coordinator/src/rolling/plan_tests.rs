//! The plan's decisions, case by case, and whole updates simulated step by
//! step with the invariants checked after every step.

use super::*;
use pgherd_shared::patroni::Member;

fn pod(name: &str, flagged: bool) -> PodInfo {
    PodInfo {
        name: name.into(),
        flagged,
        outdated: flagged.then(|| "pod template changed".to_string()),
        ready: true,
        terminating: false,
        age_seconds: 3600,
    }
}

fn member(name: &str, role: &str, state: &str, lag: u64) -> Member {
    Member {
        name: name.into(),
        role: role.into(),
        state: state.into(),
        api_url: None,
        host: None,
        port: None,
        timeline: Some(1),
        lag: (role != "leader").then(|| lag.into()),
        pending_restart: None,
        tags: Default::default(),
    }
}

fn cluster(members: Vec<Member>) -> Cluster {
    Cluster {
        members,
        pause: false,
        scope: None,
    }
}

fn healthy3() -> Cluster {
    cluster(vec![
        member("pg-0", "leader", "running", 0),
        member("pg-1", "replica", "streaming", 0),
        member("pg-2", "replica", "streaming", 0),
    ])
}

fn inputs<'a>(pods: &'a [PodInfo], c: Option<&'a Cluster>) -> Inputs<'a> {
    Inputs {
        pods,
        instances: pods.len(),
        cluster: c,
        max_lag_bytes: 1 << 20,
        switchover_allowed: true,
        come_back_seconds: 600,
    }
}

#[test]
fn nothing_outdated_is_done_even_without_patroni() {
    let pods = [pod("pg-0", false), pod("pg-1", false)];
    assert_eq!(next_step(&inputs(&pods, None)), Step::Done);
}

#[test]
fn outdated_pods_are_flagged_first_all_at_once() {
    let mut pods = vec![pod("pg-0", false), pod("pg-1", false), pod("pg-2", false)];
    pods[0].outdated = Some("image a -> b".into());
    pods[2].outdated = Some("image a -> b".into());
    let c = healthy3();
    assert_eq!(
        next_step(&inputs(&pods, Some(&c))),
        Step::Flag(vec![
            ("pg-0".into(), "image a -> b".into()),
            ("pg-2".into(), "image a -> b".into()),
        ])
    );
}

#[test]
fn replicas_go_first_and_the_step_counts_the_pods_already_current() {
    let pods = [pod("pg-0", true), pod("pg-1", true), pod("pg-2", true)];
    let c = healthy3();
    assert_eq!(
        next_step(&inputs(&pods, Some(&c))),
        Step::Replace {
            pod: "pg-1".into(),
            step: 1,
            of: 3,
            reason: "pod template changed".into(),
            downtime: false,
        }
    );
    // A flag set by hand (no template change) is honoured too.
    let mut pods = [pod("pg-0", false), pod("pg-1", false), pod("pg-2", true)];
    pods[2].outdated = None;
    assert_eq!(
        next_step(&inputs(&pods, Some(&c))),
        Step::Replace {
            pod: "pg-2".into(),
            step: 3,
            of: 3,
            reason: "flagged for a rolling update".into(),
            downtime: false,
        }
    );
}

#[test]
fn waits_and_blocks_table() {
    let c = healthy3();
    let base = || vec![pod("pg-0", true), pod("pg-1", false), pod("pg-2", true)];
    type Edit = fn(&mut Vec<PodInfo>, &mut Cluster);
    let cases: Vec<(&str, Edit, Step)> = vec![
        (
            "replaced replica still starting",
            |p, c| {
                p[1].ready = false;
                p[1].age_seconds = 30;
                c.members[1].state = "starting".into();
            },
            Step::Wait("pod pg-1 is not ready".into()),
        ),
        (
            "replaced replica ready but not streaming yet",
            |p, c| {
                p[1].age_seconds = 30;
                c.members[1].state = "running".into();
            },
            Step::Wait("replica pg-1 is running, not streaming".into()),
        ),
        (
            "replaced replica lagging",
            |p, c| {
                p[1].age_seconds = 30;
                c.members[1].lag = Some((10u64 << 20).into());
            },
            Step::Wait("replica pg-1 lags more than 1048576 bytes".into()),
        ),
        (
            "replaced replica lag unknown",
            |p, c| {
                p[1].age_seconds = 30;
                c.members[1].lag = Some("unknown".into());
            },
            Step::Wait("replica pg-1's lag is unknown".into()),
        ),
        (
            "replaced replica never came back",
            |p, c| {
                p[1].ready = false;
                p[1].age_seconds = 601;
                c.members.remove(1);
            },
            Step::Blocked(
                "pod pg-1 is not ready for more than 600s; the rolling update stops here, before the primary"
                    .into(),
            ),
        ),
        (
            "ready but never joined Patroni",
            |p, c| {
                p[1].age_seconds = 601;
                c.members.remove(1);
            },
            Step::Blocked(
                "pod pg-1 is not a Patroni member for more than 600s; the rolling update stops here, before the primary"
                    .into(),
            ),
        ),
        (
            "a pod terminating",
            |p, _| p[2].terminating = true,
            Step::Wait("pod pg-2 is terminating".into()),
        ),
        (
            "a pod missing",
            |p, _| {
                p.remove(1);
            },
            Step::Wait(
                "2 of 3 pods exist; waiting for the StatefulSet to create the rest".into(),
            ),
        ),
        (
            "paused",
            |_, c| c.pause = true,
            Step::Wait("Patroni is in maintenance mode (paused)".into()),
        ),
        (
            "no leader",
            |_, c| c.members[0].role = "replica".into(),
            Step::Wait("Patroni has no leader".into()),
        ),
        (
            "flagged replica being built",
            |_, c| c.members[2].state = "creating replica".into(),
            Step::Wait("replica pg-2 is still being created".into()),
        ),
    ];
    for (name, edit, want) in cases {
        let (mut pods, mut c) = (base(), c.clone());
        edit(&mut pods, &mut c);
        let mut i = inputs(&pods, Some(&c));
        i.instances = 3;
        assert_eq!(next_step(&i), want, "{name}");
    }
    let pods = base();
    assert_eq!(
        next_step(&inputs(&pods, None)),
        Step::Wait("no Patroni member answered GET /cluster".into())
    );
}

#[test]
fn the_primary_is_switched_over_to_the_best_current_replica() {
    let pods = [pod("pg-0", true), pod("pg-1", false), pod("pg-2", false)];
    let mut c = healthy3();
    c.members[1].lag = Some(500.into());
    c.members[2].lag = Some(100.into());
    assert_eq!(
        next_step(&inputs(&pods, Some(&c))),
        Step::Switchover {
            from: "pg-0".into(),
            to: "pg-2".into()
        },
        "lowest lag"
    );
    c.members[1].role = "sync_standby".into();
    assert_eq!(
        next_step(&inputs(&pods, Some(&c))),
        Step::Switchover {
            from: "pg-0".into(),
            to: "pg-1".into()
        },
        "a synchronous standby before a lower lag"
    );
    // Outside every maintenance window the primary waits.
    let mut i = inputs(&pods, Some(&c));
    i.switchover_allowed = false;
    assert_eq!(
        next_step(&i),
        Step::Wait("primary pg-0 is replaced only inside a maintenance window".into())
    );
}

#[test]
fn never_a_switchover_to_a_flagged_lagging_or_non_streaming_member() {
    let pods = [pod("pg-0", true), pod("pg-1", false), pod("pg-2", true)];
    let mut c = healthy3();
    c.members[1].lag = Some((2u64 << 20).into());
    c.members[2].role = "sync_standby".into();
    assert_eq!(switchover_candidate(&c, &pods, 1 << 20), None);
    c.members[1].lag = Some(0.into());
    c.members[1].state = "running".into();
    assert_eq!(switchover_candidate(&c, &pods, 1 << 20), None);
    c.members[1].state = "streaming".into();
    assert_eq!(
        switchover_candidate(&c, &pods, 1 << 20).map(|m| m.name.as_str()),
        Some("pg-1")
    );
}

#[test]
fn a_single_member_is_replaced_with_downtime_inside_a_window_only() {
    let pods = [pod("pg-0", true)];
    let c = cluster(vec![member("pg-0", "leader", "running", 0)]);
    assert_eq!(
        next_step(&inputs(&pods, Some(&c))),
        Step::Replace {
            pod: "pg-0".into(),
            step: 1,
            of: 1,
            reason: "pod template changed".into(),
            downtime: true,
        }
    );
    let mut i = inputs(&pods, Some(&c));
    i.switchover_allowed = false;
    assert!(matches!(next_step(&i), Step::Wait(_)));
}

/// A model of the StatefulSet and Patroni reacting to each step.
struct World {
    pods: Vec<PodInfo>,
    cluster: Cluster,
    deletes: Vec<String>,
    switchovers: Vec<(String, String)>,
}

impl World {
    fn new(n: usize, leader: usize, sync: Option<usize>) -> Self {
        let names: Vec<String> = (0..n).map(|i| format!("pg-{i}")).collect();
        let members = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let role = if i == leader {
                    "leader"
                } else if Some(i) == sync {
                    "sync_standby"
                } else {
                    "replica"
                };
                let state = if i == leader { "running" } else { "streaming" };
                member(name, role, state, (i * 10) as u64)
            })
            .collect();
        let mut pods: Vec<PodInfo> = names.iter().map(|n| pod(n, false)).collect();
        for p in &mut pods {
            p.outdated = Some("image a -> b".into());
        }
        World {
            pods,
            cluster: cluster(members),
            deletes: vec![],
            switchovers: vec![],
        }
    }

    fn apply(&mut self, step: &Step) {
        match step {
            Step::Flag(list) => {
                for (name, _) in list {
                    self.pods
                        .iter_mut()
                        .find(|p| &p.name == name)
                        .unwrap()
                        .flagged = true;
                }
            }
            Step::Replace { pod, downtime, .. } => {
                let leader = self.cluster.leader().unwrap().name.clone();
                assert!(
                    *pod != leader || *downtime,
                    "deleted the leader {pod} without a switchover"
                );
                assert!(
                    !self.deletes.contains(pod),
                    "{pod} deleted twice: {:?}",
                    self.deletes
                );
                self.deletes.push(pod.clone());
                // Recreated from the current template and back at once.
                let p = self.pods.iter_mut().find(|p| &p.name == pod).unwrap();
                *p = PodInfo {
                    age_seconds: 0,
                    ..self::pod(pod, false)
                };
                let m = self
                    .cluster
                    .members
                    .iter_mut()
                    .find(|m| &m.name == pod)
                    .unwrap();
                if !*downtime {
                    m.state = "streaming".into();
                    m.lag = Some(0.into());
                }
            }
            Step::Switchover { from, to } => {
                let candidate = self.pods.iter().find(|p| &p.name == to).unwrap();
                assert!(!candidate.flagged, "switchover to an outdated pod {to}");
                self.switchovers.push((from.clone(), to.clone()));
                for m in &mut self.cluster.members {
                    if &m.name == from {
                        m.role = "replica".into();
                        m.state = "streaming".into();
                        m.lag = Some(0.into());
                    } else if &m.name == to {
                        m.role = "leader".into();
                        m.state = "running".into();
                        m.lag = None;
                    }
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn run(&mut self) -> Vec<Step> {
        let mut steps = vec![];
        for _ in 0..50 {
            let i = inputs(&self.pods, Some(&self.cluster));
            let step = next_step(&i);
            if step == Step::Done {
                return steps;
            }
            self.apply(&step);
            steps.push(step);
        }
        panic!("no end: {steps:?}");
    }
}

#[test]
fn whole_updates_replace_every_pod_once_and_the_primary_last() {
    for n in 1..=5 {
        for leader in 0..n {
            for sync in (0..n).map(Some).chain([None]) {
                if sync == Some(leader) {
                    continue;
                }
                let mut w = World::new(n, leader, sync);
                let old_leader = format!("pg-{leader}");
                w.run();
                let mut replaced = w.deletes.clone();
                replaced.sort();
                let all: Vec<String> = (0..n).map(|i| format!("pg-{i}")).collect();
                assert_eq!(replaced, all, "n={n} leader={leader}");
                assert_eq!(w.deletes.last(), Some(&old_leader), "primary last");
                let want_switchovers = usize::from(n > 1);
                assert_eq!(w.switchovers.len(), want_switchovers, "n={n}");
                if let (Some(s), true) = (sync, n > 1) {
                    assert_eq!(w.switchovers[0].1, format!("pg-{s}"), "sync standby first");
                }
            }
        }
    }
}

#[test]
fn an_interrupted_update_resumes_without_deleting_a_pod_twice() {
    let mut w = World::new(3, 0, None);
    // Two steps (flag, first replica), then the coordinator "restarts": the
    // next plan sees only the pods and Patroni, as a fresh process would.
    for _ in 0..2 {
        let s = next_step(&inputs(&w.pods, Some(&w.cluster)));
        w.apply(&s);
    }
    assert_eq!(w.deletes, ["pg-1"]);
    w.run();
    assert_eq!(w.deletes, ["pg-1", "pg-2", "pg-0"]);
}

#[test]
fn the_exact_sequence_for_three_members() {
    let mut w = World::new(3, 0, None);
    let steps = w.run();
    let short: Vec<String> = steps
        .iter()
        .map(|s| match s {
            Step::Flag(l) => format!("flag {}", l.len()),
            Step::Replace { pod, step, of, .. } => format!("replace {pod} {step}/{of}"),
            Step::Switchover { from, to } => format!("switchover {from}->{to}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        short,
        [
            "flag 3",
            "replace pg-1 1/3",
            "replace pg-2 2/3",
            "switchover pg-0->pg-1",
            "replace pg-0 3/3",
        ]
    );
}
