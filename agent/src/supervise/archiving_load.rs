//! PID 1's duties under archiving load: the supervisor's own signal handling and child reaping, on a
//! current-thread runtime like `run`'s, while the archive socket is in the middle of compressing a pushed
//! WAL file and of decompressing a fetched one. The (de)compression is held until the supervisor has done
//! its work, so the test does not depend on how fast either is; work on the event-loop thread would make
//! the supervisor wait for the hold to give up instead, and the test fail.
//!
//! The reaping is the supervisor's `waitpid(-1)`, which takes any child of the process: nextest runs each
//! test in its own process, and this is one test so that its two phases never take each other's child.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{raise, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{reap, Event, Signals};
use crate::backup::codec::hold::{self, Hold};
use crate::backup::memory::MemStore;
use crate::backup::socket::{Request, Response, Server};
use crate::backup::store::ObjectStore;
use crate::backup::wal;

const SEGMENT: &str = "000000010000000000000001";

/// What Postgres's archive_command or restore_command sends through the socket, and the answer.
async fn ask(socket: PathBuf, req: Request) -> Response {
    let (read, mut write) = UnixStream::connect(socket).await.unwrap().into_split();
    let mut line = serde_json::to_string(&req).unwrap();
    line.push('\n');
    write.write_all(line.as_bytes()).await.unwrap();
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await.unwrap();
    serde_json::from_str(&answer).unwrap()
}

/// Once the held (de)compression has started, does what the supervisor does for Patroni, a SIGHUP to
/// take and an exited child to reap, then checks that the (de)compression was still held meanwhile.
async fn supervise_during(hold: &Hold) {
    while !hold.reached() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut signals = Signals::new().unwrap();
    let pid = Pid::from_raw(Command::new("true").spawn().unwrap().id() as i32);
    raise(Signal::SIGHUP).unwrap();
    let (mut reloaded, mut exited) = (false, None);
    while !reloaded || exited.is_none() {
        match signals.next().await {
            Event::Reload => reloaded = true,
            Event::Child => exited = exited.or(reap(Some(pid))),
            Event::Stop(sig) => panic!("nobody sent {sig}"),
        }
    }
    assert_eq!(exited, Some(WaitStatus::Exited(pid, 0)));
    assert!(
        hold.release(),
        "the supervisor took its signal and reaped its child only after the (de)compression: it ran on \
         the supervisor's thread"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn signals_and_children_are_handled_while_the_archive_socket_compresses() {
    let dir = tempfile::tempdir().unwrap();
    let pg_wal = dir.path().join("pg_wal");
    std::fs::create_dir_all(&pg_wal).unwrap();
    let store = MemStore::new();
    let socket = dir.path().join("run/agent.sock");
    let server = Server::in_memory(dir.path().to_path_buf(), store.clone());
    tokio::spawn(server.serve(socket.clone(), None));
    while !socket.exists() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let content = b"a WAL segment PID 1 must not wait for\n".repeat(30_000);
    std::fs::write(pg_wal.join(SEGMENT), &content).unwrap();

    let compressing = hold::on(&content);
    let push = tokio::spawn(ask(
        socket.clone(),
        Request::WalPush {
            envdir: "/envdir".into(),
            path: pg_wal.join(SEGMENT),
        },
    ));
    supervise_during(&compressing).await;
    push.await.unwrap().into_result().unwrap();
    let object = store.object(&store.settings().wal_key(SEGMENT)).unwrap();
    assert_eq!(object.meta["sha256"], wal::sha256_hex(&content));
    assert_eq!(object.meta["size"], content.len().to_string());

    let decompressing = hold::on(&object.body);
    let dest = pg_wal.join("RECOVERYXLOG");
    let fetch = tokio::spawn(ask(
        socket,
        Request::WalFetch {
            envdir: "/envdir".into(),
            name: SEGMENT.into(),
            dest: dest.clone(),
        },
    ));
    supervise_during(&decompressing).await;
    let fetched = fetch.await.unwrap();
    assert_eq!(fetched.found, Some(true), "{fetched:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), content);
}
